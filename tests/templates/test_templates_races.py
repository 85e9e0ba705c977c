"""Template writes racing a delete, for real: requests at once on their own connections.

Every write is one conditional UPDATE/DELETE … RETURNING, so whichever commits first, the
other answers with the truth: 404 once the template is gone, 412 when an ``If-Match`` no
longer holds — never 500.
"""

from __future__ import annotations

import asyncio

import httpx


async def test_writes_racing_a_delete_are_404_never_500(client: httpx.AsyncClient) -> None:
    outcomes: set[tuple[int, ...]] = set()
    for round_ in range(12):
        created = await client.post("/templates", json={"name": f"t{round_}", "content": "v0"})
        assert created.status_code == 201, created.text
        path = f"/templates/{created.json()['templateid']}"
        etag = created.headers["etag"]
        answers = await asyncio.gather(
            client.patch(path, json={"content": "v1"}),
            client.put(path, json={"name": "t", "content": "v2"}, headers={"If-Match": etag}),
            client.delete(path),
            client.delete(path, headers={"If-Match": etag}),
        )
        statuses = tuple(answer.status_code for answer in answers)
        outcomes.add(statuses)
        assert all(s in {200, 204, 404, 412} for s in statuses), [a.text for a in answers]
        assert statuses[2:].count(204) == 1, statuses  # exactly one delete wins
        assert (await client.get(path)).status_code == 404
    assert any(404 in statuses for statuses in outcomes), outcomes

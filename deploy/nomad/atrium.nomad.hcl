# Atrium API on Nomad: 3 replicas with Nomad service discovery, probes as service checks, and a
# one-at-a-time rolling update that waits for /readyz. Migrations are NOT run here: run the batch
# job in atrium-migrate.nomad.hcl once per release, before `nomad job run atrium.nomad.hcl`.
#
#   nomad namespace apply atrium
#   nomad var put -namespace atrium nomad/jobs database_url=postgresql://… redis_url=redis://… \
#       encryption_key=… token_secret=…
#   nomad job run -var image=registry.example.com/atrium:0.1.0 deploy/nomad/atrium.nomad.hcl

variable "image" {
  type        = string
  description = "The Atrium image (deploy/Dockerfile), tag pinned per release."
  default     = "registry.example.com/atrium:0.1.0"
}

variable "datacenters" {
  type        = list(string)
  description = "Datacenters the replicas may run in."
  default     = ["dc1"]
}

variable "replicas" {
  type        = number
  description = "Number of API replicas."
  default     = 3
}

job "atrium" {
  namespace   = "atrium"
  datacenters = var.datacenters
  type        = "service"

  update {
    max_parallel      = 1
    health_check      = "checks"
    min_healthy_time  = "10s"
    healthy_deadline  = "3m"
    progress_deadline = "10m"
    auto_revert       = true
    canary            = 0
  }

  group "api" {
    count = var.replicas

    spread {
      attribute = "${node.unique.id}"
    }

    network {
      port "http" {
        to = 8000
      }
    }

    service {
      name     = "atrium-api"
      port     = "http"
      provider = "nomad"
      tags     = ["http"]

      check {
        name     = "livez"
        type     = "http"
        path     = "/livez"
        interval = "10s"
        timeout  = "3s"
      }

      check {
        name     = "readyz"
        type     = "http"
        path     = "/readyz"
        interval = "5s"
        timeout  = "3s"

        check_restart {
          limit = 0
        }
      }
    }

    restart {
      attempts = 5
      interval = "5m"
      delay    = "10s"
      mode     = "delay"
    }

    task "api" {
      driver = "docker"

      # Deregister from the service catalogue first, then SIGTERM: in-flight requests drain
      # within ATRIUM_GRACEFUL_TIMEOUT (30 s) + 5 s for the app's shutdown.
      shutdown_delay = "5s"
      kill_signal    = "SIGTERM"
      kill_timeout   = "40s"

      config {
        image           = var.image
        args            = ["serve"]
        ports           = ["http"]
        readonly_rootfs = true
        cap_drop        = ["ALL"]
        security_opt    = ["no-new-privileges"]

        mount {
          type     = "tmpfs"
          target   = "/tmp"
          readonly = false
          tmpfs_options {
            size = 67108864
          }
        }
      }

      user = "10001:10001"

      env {
        ATRIUM_ENV              = "production"
        ATRIUM_WORKERS          = "2"
        ATRIUM_AUTO_MIGRATE     = "false"
        ATRIUM_GRACEFUL_TIMEOUT = "30"
        ATRIUM_REPLICA_NAME     = "${NOMAD_ALLOC_NAME}"
      }

      template {
        destination = "secrets/atrium.env"
        env         = true
        change_mode = "restart"
        data        = <<-EOT
          {{ with nomadVar "nomad/jobs" }}
          ATRIUM_DATABASE_URL={{ .database_url }}
          ATRIUM_REDIS_URL={{ .redis_url }}
          ATRIUM_ENCRYPTION_KEY={{ .encryption_key }}
          ATRIUM_TOKEN_SECRET={{ .token_secret }}
          {{ end }}
        EOT
      }

      resources {
        cpu    = 1000
        memory = 512
      }
    }
  }
}

# `atrium migrate`, once per release, as a batch job (never by the API replicas):
#   nomad job run -var image=registry.example.com/atrium:0.1.0 deploy/nomad/atrium-migrate.nomad.hcl
# Same image and secrets as the API: both jobs live in the `atrium` namespace, whose
# `nomad/jobs` variable every job there may read.

variable "image" {
  type        = string
  description = "The Atrium image of the release being rolled out."
  default     = "registry.example.com/atrium:0.1.0"
}

variable "datacenters" {
  type        = list(string)
  description = "Datacenters the job may run in."
  default     = ["dc1"]
}

job "atrium-migrate" {
  namespace   = "atrium"
  datacenters = var.datacenters
  type        = "batch"

  group "migrate" {
    count = 1

    restart {
      attempts = 2
      delay    = "15s"
      mode     = "fail"
    }

    reschedule {
      attempts  = 0
      unlimited = false
    }

    task "migrate" {
      driver = "docker"

      config {
        image           = var.image
        args            = ["migrate"]
        readonly_rootfs = true
        cap_drop        = ["ALL"]
        security_opt    = ["no-new-privileges"]

        mount {
          type     = "tmpfs"
          target   = "/tmp"
          readonly = false
          tmpfs_options {
            size = 16777216
          }
        }
      }

      user = "10001:10001"

      env {
        ATRIUM_ENV          = "production"
        ATRIUM_AUTO_MIGRATE = "false"
      }

      template {
        destination = "secrets/atrium.env"
        env         = true
        data        = <<-EOT
          {{ with nomadVar "nomad/jobs" }}
          ATRIUM_DATABASE_URL={{ .database_url }}
          ATRIUM_ENCRYPTION_KEY={{ .encryption_key }}
          ATRIUM_TOKEN_SECRET={{ .token_secret }}
          {{ end }}
        EOT
      }

      resources {
        cpu    = 500
        memory = 256
      }
    }
  }
}

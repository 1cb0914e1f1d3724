variable "port" {
  type    = number
  default = 8085
}

variable "region" {}

node {
  network = "net-${var.region}"
  listen  = "127.0.0.1:${var.port}"
  id      = var.undeclared
}

tls {
  insecure = true
}

tunnel "quic" {}
router "memory" {}

tls {
  insecure = true
}

tunnel "quic" {}
router "memory" {}

resolvr "dns" {
  config {
    name = "_microhost._udp.example.test"
  }
}

node {
  listen = "127.0.0.1:8085"
  lsiten = "127.0.0.1:8086"
  advertize = "203.0.113.5:8085"
}

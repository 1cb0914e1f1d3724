tls {
  insecure = true
}

tunnel "quic" {}
router "memory" {}

resolver "dns" {
  config {
    nmae   = "_microhost._udp.example.test"
    server = "127.0.0.1:5353"
  }
}

proxy "rpc" {
  # plugin arguments belong inside config { }
  listen = "127.0.0.1:9090"
}

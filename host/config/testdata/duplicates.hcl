tls {
  insecure = true
}

tunnel "quic" {}
tunnel "quic" {}
router "memory" {}

resolver "dns" {
  config {
    name = "_a._udp.example.test"
  }
}

resolver "dns" {
  config {
    name = "_b._udp.example.test"
  }
}

resolver "dns" {
  name = "second-dns"
  config {
    name = "_b._udp.example.test"
  }
}

proxy "rpc" {
  plugin  = "bin/my-proxy"
  address = "127.0.0.1:9999"
}

service "greeter" {
  address = "127.0.0.1:50051"
}

service "greeter" {
  address = "127.0.0.1:50052"
}

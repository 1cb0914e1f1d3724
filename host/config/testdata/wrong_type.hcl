node {
  peers = "127.0.0.1:8095"
}

tls {
  insecure = "maybe"
}

tunnel "quic" {}
router "memory" {}

resolver "dns" {
  config {
    name = "_microhost._udp.example.test"
    port = "fifty-three"
  }
}

service "greeter" {
  address  = "127.0.0.1:50051"
  metadata = ["a", "b"]
}

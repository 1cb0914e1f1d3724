tls {
  insecure = true
}

tunnel "quic" {}
router "memory" {}

resolver "dns" {
  config {
    name    = "_microhost._udp.example.test"
    timeout = "5 seconds"
  }
}

service "greeter" {
  address = "127.0.0.1:50051"
  check {
    interval = "10"
    timeout  = "-2s"
  }
}

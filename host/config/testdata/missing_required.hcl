tls {
  ca = "certs/ca.pem"
}

tunnel "quic" {}
router "memory" {}

resolver "dns" {
  config {
    server = "127.0.0.1:5353"
  }
}

resolver "http" {}

service "greeter" {
  check {
    interval = "5s"
  }
}

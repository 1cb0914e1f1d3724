node {
  listen    = "127.0.0.1"
  advertise = "0.0.0.0:8085"
  admin     = "localhost:http"
  http      = "127.0.0.1:70000"
  peers     = ["10.0.0.1:8085", "10.0.0.2", ":8085"]
}

tls {
  insecure = true
}

tunnel "quic" {}
router "memory" {}

service "greeter" {
  address = "bad host:50051"
}

# No tls, tunnel or router block: each is reported.
node {
  network = "demo"
}

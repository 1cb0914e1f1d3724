# microhost: one node on this machine, ready to run with no edits:
#
#   microhost validate config.hcl     # check this file, start nothing
#   microhost run config.hcl
#
# Every argument is described in docs/config.md. Arguments that belong to
# the host sit directly in a block; arguments of a plugin sit in its
# config { } block and are checked against the schema the plugin publishes.
# Relative paths are relative to this file's directory.

# Variables can be set with MICROHOST_VAR_<name>, e.g. MICROHOST_VAR_node_id=b.
variable "node_id" {
  description = "Name of this node in the network."
  default     = "dev-1"
}

node {
  id      = var.node_id
  network = "microhost" # nodes only join peers with the same network name

  listen = "127.0.0.1:8085" # tunnel, QUIC over UDP; use "0.0.0.0:8085" to accept other machines
  # advertise = "203.0.113.5:8085"  # the address peers should dial, if not listen (NAT, containers)

  admin = "127.0.0.1:8086" # admin gRPC API used by the microhost CLI; "unix:/path" also works
  http  = "127.0.0.1:8087" # /metrics (Prometheus) and /healthz

  peers    = [] # seed peers to dial, e.g. ["10.0.0.2:8085"]
  data_dir = ".microhost"
}

# Development mode: a throwaway certificate, no CA. microhost warns loudly.
# For a real network, create a CA and a certificate per node with
# `microhost ca` (see microhost ca --help) and use:
#   tls {
#     ca   = "certs/ca.pem"
#     cert = "certs/dev-1.pem"
#     key  = "certs/dev-1-key.pem"
#   }
tls {
  insecure = true
}

# Links to other nodes, one QUIC connection per peer.
tunnel "quic" {
  config {}
}

# The routing table: local services and routes advertised by peers.
router "memory" {
  config {}
}

# Resolvers find peers beyond the static list; add as many as you like
# (two of the same type need distinct names: name = "...").
#
# resolver "dns" {
#   config {
#     name   = "_microhost._udp.example.test" # SRV, A or AAAA records
#     server = "127.0.0.1:5353"               # default: the system resolver
#   }
# }
#
# resolver "http" {
#   config {
#     url = "http://127.0.0.1:18080/network" # answers {"nodes":[{"address":"host:port"}]}
#   }
# }

# gRPC clients call any service in the network through this address.
proxy "rpc" {
  config {
    listen = "127.0.0.1:9090"
  }
}

# Services can register themselves through the admin API, or be declared
# here. Each needs a unique name and an address; the check is optional.
#
# service "greeter" {
#   address = "127.0.0.1:50051"
#   check {
#     interval = "10s"
#     timeout  = "2s"
#   }
# }

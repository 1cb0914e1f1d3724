package pubsubpb

// The plugins come from
//   GOBIN=$PWD/bin/tools go install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
//   GOBIN=$PWD/bin/tools go install google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.5.1
// run at the repository root.
//go:generate protoc --go_out=. --go_opt=paths=source_relative --go-grpc_out=. --go-grpc_opt=paths=source_relative pubsub.proto

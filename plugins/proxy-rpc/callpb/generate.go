// Package callpb holds the control messages of calls forwarded between
// proxies (see package remote).
package callpb

// The plugin comes from
//   GOBIN=$PWD/bin/tools go install google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
// run at the repository root.
//go:generate protoc --go_out=. --go_opt=paths=source_relative call.proto

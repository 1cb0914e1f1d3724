// Package networkpb holds the generated wire messages of the network protocol.
package networkpb

//go:generate protoc --go_out=. --go_opt=paths=source_relative network.proto

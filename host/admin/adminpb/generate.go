// Package adminpb holds the generated code of the admin API (admin.proto).
package adminpb

//go:generate protoc -I ../../.. -I ../../../sdk/proto --go_out=../../.. --go_opt=paths=source_relative --go-grpc_out=../../.. --go-grpc_opt=paths=source_relative host/admin/adminpb/admin.proto

package microhostv1

//go:generate sh -c "cd ../.. && protoc -I . --go_out=. --go_opt=paths=source_relative --go-grpc_out=. --go-grpc_opt=paths=source_relative microhost/v1/*.proto"

# Tools for `make proto` are pinned here and installed into bin/tools.
PROTOC_GEN_GO_VERSION      := v1.36.12
PROTOC_GEN_GO_GRPC_VERSION := v1.5.1
TOOLS := $(CURDIR)/bin/tools

.PHONY: build test test-short proto demo bench vet fmt tools clean

build:
	go build -o bin/microhost ./cmd/microhost

test:
	@unformatted=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$unformatted" ]; then echo "gofmt would change: $$unformatted"; exit 1; fi
	go vet ./...
	go test -race -count=1 -timeout 20m ./...
	# The 1000-node simulation runs in real time, too slowly under -race.
	go test -count=1 -run TestThousandNodesConverge ./host/sim

test-short:
	go test -short -count=1 ./...

tools:
	GOBIN=$(TOOLS) go install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
	GOBIN=$(TOOLS) go install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC_VERSION)

# protoc itself comes from Debian (protobuf-compiler, libprotoc 3.21.12, and
# libprotobuf-dev for the well-known types); every package with .proto files
# says how it is generated in a //go:generate line.
proto: tools
	PATH=$(TOOLS):$$PATH go generate ./...

demo:
	go run ./cmd/microhost demo

bench:
	go run ./bench

vet:
	go vet ./...

fmt:
	gofmt -l -w $$(git ls-files '*.go')

clean:
	rm -rf bin

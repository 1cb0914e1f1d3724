package sdk

import "context"

// Proxy is the gRPC data plane: clients call any service through it by name.
type Proxy interface {
	Component
	// Address returns the address gRPC clients connect to.
	Address(ctx context.Context) (string, error)
}

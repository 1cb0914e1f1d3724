// Package grpccheck is the registry's health checker: the standard gRPC
// health protocol (grpc.health.v1) against a service's address.
package grpccheck

import (
	"context"
	"fmt"
	"net"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

// Check asks the gRPC server at address whether grpcService ("" for the
// server as a whole) is SERVING. A server that does not implement the
// health service at all (Unimplemented) is judged by whether a TCP
// connection to it succeeds, so that services without the health service
// can still be declared with a check; any other failure is unhealthy.
func Check(ctx context.Context, address, grpcService string) error {
	conn, err := grpc.NewClient("passthrough:///"+address, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return fmt.Errorf("health check of %s: %w", address, err)
	}
	defer conn.Close()
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: grpcService})
	switch status.Code(err) {
	case codes.OK:
	case codes.Unimplemented:
		return dialTCP(ctx, address)
	case codes.NotFound:
		return fmt.Errorf("health check of %s: the server does not know service %q", address, grpcService)
	default:
		return fmt.Errorf("health check of %s: %s", address, status.Convert(err).Message())
	}
	if s := resp.GetStatus(); s != healthpb.HealthCheckResponse_SERVING {
		return fmt.Errorf("health check of %s: status %s", address, s)
	}
	return nil
}

func dialTCP(ctx context.Context, address string) error {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", address)
	if err != nil {
		return fmt.Errorf("health check of %s: no health service, and TCP connect failed: %w", address, err)
	}
	return c.Close()
}

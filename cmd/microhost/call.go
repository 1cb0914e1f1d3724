package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/microhost/microhost/cmd/microhost/cli"
	"github.com/microhost/microhost/host/admin"
	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	rpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/dynamicpb"
)

func callCommand() *cobra.Command {
	var adminAddr string
	var md []string
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "call SERVICE METHOD [JSON]",
		Short: "Call a method of any service in the network through the local node",
		Long: `Call a method of a service by name through the local node's proxy, as a gRPC
client would. The method's types come from the service's server reflection
(through the network, like grpcurl); the request is JSON, and so is the reply.
METHOD is "package.Service/Method" or "package.Service.Method".

  microhost call greeter microhost.examples.greeter.Greeter/SayHello '{"name":"you"}'`,
		Args: cobra.RangeArgs(2, 3),
		RunE: func(cmd *cobra.Command, args []string) error {
			request := "{}"
			if len(args) == 3 {
				request = args[2]
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			pairs := []string{"micro-service", args[0]}
			for _, kv := range md {
				k, v, ok := strings.Cut(kv, "=")
				if !ok {
					return fmt.Errorf("--metadata %q: want key=value", kv)
				}
				pairs = append(pairs, k, v)
			}
			ctx = metadata.AppendToOutgoingContext(ctx, pairs...)
			out, err := call(ctx, adminAddr, args[0], args[1], request)
			if err != nil {
				return err
			}
			fmt.Fprintln(cmd.OutOrStdout(), out)
			return nil
		},
	}
	def := os.Getenv(cli.EnvAdmin)
	if def == "" {
		def = cli.DefaultAdmin
	}
	cmd.Flags().StringVar(&adminAddr, "admin", def, "admin API address of the local node (env "+cli.EnvAdmin+")")
	cmd.Flags().StringArrayVar(&md, "metadata", nil, "request metadata key=value (repeatable)")
	cmd.Flags().DurationVar(&timeout, "timeout", 10*time.Second, "deadline of the call")
	return cmd
}

// call finds the method by reflection through the proxy and invokes it.
func call(ctx context.Context, adminAddr, service, method, request string) (string, error) {
	ac, err := admin.Dial(adminAddr)
	if err != nil {
		return "", err
	}
	defer ac.Close()
	proxyAddr, err := ac.ProxyAddress(ctx)
	if err != nil {
		return "", err
	}
	conn, err := grpc.NewClient(proxyAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return "", err
	}
	defer conn.Close()

	serviceName, methodName, err := splitMethod(method)
	if err != nil {
		return "", err
	}
	files, err := reflectFiles(ctx, conn, serviceName)
	if status.Code(err) == codes.NotFound || status.Code(err) == codes.Unavailable {
		return "", fmt.Errorf("%s (`microhost network routes` lists the services this node can reach)", status.Convert(err).Message())
	}
	if err != nil {
		return "", fmt.Errorf("asking %s's server reflection for %s: %w", service, serviceName, err)
	}
	d, err := files.FindDescriptorByName(protoreflect.FullName(serviceName))
	if err != nil {
		return "", fmt.Errorf("the service does not describe %s: %w", serviceName, err)
	}
	sd, ok := d.(protoreflect.ServiceDescriptor)
	if !ok {
		return "", fmt.Errorf("%s is not a service", serviceName)
	}
	md := sd.Methods().ByName(protoreflect.Name(methodName))
	if md == nil {
		return "", fmt.Errorf("service %s has no method %s", serviceName, methodName)
	}
	if md.IsStreamingClient() {
		return "", fmt.Errorf("%s/%s takes a stream of requests; call takes one JSON request", serviceName, methodName)
	}
	in := dynamicpb.NewMessage(md.Input())
	if err := (protojson.UnmarshalOptions{Resolver: dynamicResolver(files)}).Unmarshal([]byte(request), in); err != nil {
		return "", fmt.Errorf("request is not a valid %s in JSON: %w", md.Input().FullName(), err)
	}
	fullMethod := "/" + serviceName + "/" + methodName
	marshal := protojson.MarshalOptions{Multiline: true, Resolver: dynamicResolver(files)}
	if !md.IsStreamingServer() {
		out := dynamicpb.NewMessage(md.Output())
		if err := conn.Invoke(ctx, fullMethod, in, out); err != nil {
			return "", err
		}
		b, err := marshal.Marshal(out)
		return string(b), err
	}
	stream, err := conn.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true}, fullMethod)
	if err != nil {
		return "", err
	}
	if err := stream.SendMsg(in); err != nil {
		return "", err
	}
	if err := stream.CloseSend(); err != nil {
		return "", err
	}
	var replies []string
	for {
		out := dynamicpb.NewMessage(md.Output())
		err := stream.RecvMsg(out)
		if errors.Is(err, io.EOF) {
			return strings.Join(replies, "\n"), nil
		}
		if err != nil {
			return "", err
		}
		b, err := marshal.Marshal(out)
		if err != nil {
			return "", err
		}
		replies = append(replies, string(b))
	}
}

func splitMethod(method string) (service, name string, err error) {
	method = strings.TrimPrefix(method, "/")
	if s, m, ok := strings.Cut(method, "/"); ok {
		return s, m, nil
	}
	if i := strings.LastIndexByte(method, '.'); i > 0 {
		return method[:i], method[i+1:], nil
	}
	return "", "", fmt.Errorf("method %q: write it as package.Service/Method", method)
}

// reflectFiles asks the service's server reflection for the file that
// defines symbol and everything it imports.
func reflectFiles(ctx context.Context, conn *grpc.ClientConn, symbol string) (*protoregistry.Files, error) {
	stream, err := rpb.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
	if err != nil {
		return nil, err
	}
	defer stream.CloseSend()
	byName := map[string]*descriptorpb.FileDescriptorProto{}
	ask := func(req *rpb.ServerReflectionRequest) error {
		if err := stream.Send(req); err != nil {
			return err
		}
		res, err := stream.Recv()
		if err != nil {
			return err
		}
		if e := res.GetErrorResponse(); e != nil {
			return fmt.Errorf("reflection: %s", e.GetErrorMessage())
		}
		for _, raw := range res.GetFileDescriptorResponse().GetFileDescriptorProto() {
			fd := &descriptorpb.FileDescriptorProto{}
			if err := proto.Unmarshal(raw, fd); err != nil {
				return fmt.Errorf("reflection sent a bad file descriptor: %w", err)
			}
			byName[fd.GetName()] = fd
		}
		return nil
	}
	if err := ask(&rpb.ServerReflectionRequest{MessageRequest: &rpb.ServerReflectionRequest_FileContainingSymbol{FileContainingSymbol: symbol}}); err != nil {
		return nil, err
	}
	// Fetch imports the server did not send along.
	for missing := true; missing; {
		missing = false
		for _, fd := range byName {
			for _, dep := range fd.GetDependency() {
				if _, ok := byName[dep]; ok {
					continue
				}
				if err := ask(&rpb.ServerReflectionRequest{MessageRequest: &rpb.ServerReflectionRequest_FileByFilename{FileByFilename: dep}}); err != nil {
					return nil, err
				}
				missing = true
			}
		}
	}
	set := &descriptorpb.FileDescriptorSet{}
	for _, fd := range byName {
		set.File = append(set.File, fd)
	}
	return protodesc.NewFiles(set)
}

// dynamicResolver resolves Any types from the reflected files.
func dynamicResolver(files *protoregistry.Files) *protoregistry.Types {
	types := &protoregistry.Types{}
	files.RangeFiles(func(fd protoreflect.FileDescriptor) bool {
		msgs := fd.Messages()
		for i := range msgs.Len() {
			types.RegisterMessage(dynamicpb.NewMessageType(msgs.Get(i)))
		}
		return true
	})
	return types
}

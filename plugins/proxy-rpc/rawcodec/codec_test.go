package rawcodec

import (
	"testing"

	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

func TestFramePassesBytesThroughAndSurvivesResends(t *testing.T) {
	var c Codec
	received := mem.BufferSlice{mem.SliceBuffer([]byte("hello ")), mem.SliceBuffer([]byte("world"))}
	f := new(Frame)
	if err := c.Unmarshal(received, f); err != nil {
		t.Fatal(err)
	}
	received.Free() // gRPC drops its reference after Unmarshal
	for range 2 {   // a failover sends the same frame twice
		out, err := c.Marshal(f)
		if err != nil {
			t.Fatal(err)
		}
		if got := string(out.Materialize()); got != "hello world" {
			t.Fatalf("marshalled %q", got)
		}
		out.Free() // gRPC frees what Marshal returned
	}
	if f.Len() != 11 || string(f.data.Materialize()) != "hello world" {
		t.Fatalf("frame lost its bytes: %q", f.data.Materialize())
	}
	f.Free()
	if f.Len() != 0 {
		t.Fatal("freed frame still holds data")
	}
}

func TestProtoMessagesUseProtobuf(t *testing.T) {
	var c Codec
	out, err := c.Marshal(wrapperspb.String("x"))
	if err != nil {
		t.Fatal(err)
	}
	var got wrapperspb.StringValue
	if err := c.Unmarshal(out, &got); err != nil || got.GetValue() != "x" {
		t.Fatalf("got %v, %v", &got, err)
	}
	want, _ := proto.Marshal(wrapperspb.String("x"))
	if string(out.Materialize()) != string(want) {
		t.Fatal("not protobuf encoding")
	}
	if _, err := c.Marshal(42); err == nil {
		t.Fatal("marshalled an int")
	}
	if err := c.Unmarshal(nil, new(int)); err == nil {
		t.Fatal("unmarshalled into an int")
	}
}

package sdk

import (
	"context"
	"net"
	"time"

	pb "github.com/microhost/microhost/sdk/proto/microhost/v1"
)

// SetUnclaimedSessionTimeout shortens how long an accepted session waits
// for a parked connection, until the returned func restores it.
func SetUnclaimedSessionTimeout(d time.Duration) (restore func()) {
	old := unclaimedSessionTimeout
	unclaimedSessionTimeout = d
	return func() { unclaimedSessionTimeout = old }
}

// RawDial opens a session as a bare connection, for a test to play a
// consumer that dies: closing it says nothing to the tunnel first.
func RawDial(ctx context.Context, info *pb.DataPathInfo, channel, node string) (net.Conn, error) {
	fc, _, err := (&dataPathClient{}).answer(ctx, info, &pb.DataPathHello{Request: &pb.DataPathHello_Dial{Dial: &pb.DialRequest{Channel: channel, Node: node}}}, frameOpened)
	if err != nil {
		return nil, err
	}
	return fc.conn, nil
}

// RawListen opens a listener as its bare listen connection, parking none.
func RawListen(ctx context.Context, info *pb.DataPathInfo, channel string) (net.Conn, error) {
	fc, _, err := (&dataPathClient{}).answer(ctx, info, &pb.DataPathHello{Request: &pb.DataPathHello_Listen{Listen: channel}}, frameListening)
	if err != nil {
		return nil, err
	}
	return fc.conn, nil
}

// IdleConns says how many connections a data path client holds for reuse.
func IdleConns(t Tunnel) int {
	p := &t.(*dataPathTunnel).sessions.idle
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.conns)
}

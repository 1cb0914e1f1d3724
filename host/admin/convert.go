package admin

import (
	"github.com/microhost/microhost/host/admin/adminpb"
	"github.com/microhost/microhost/host/registry"
	"github.com/microhost/microhost/sdk"
)

// Conversions between the admin API's Go types and the wire; the sdk's
// conversions cover the types they share.

func convertAll[T, U any](in []T, f func(T) U) []U {
	out := make([]U, len(in))
	for i, v := range in {
		out[i] = f(v)
	}
	return out
}

func nodeInfoToPB(n NodeInfo) *adminpb.NodeInfo {
	return &adminpb.NodeInfo{Id: n.ID, Address: n.Address, Hops: int32(n.Hops), Metric: n.Metric, Via: n.Via}
}

func nodeInfoFromPB(n *adminpb.NodeInfo) NodeInfo {
	return NodeInfo{ID: n.GetId(), Address: n.GetAddress(), Hops: int(n.GetHops()), Metric: n.GetMetric(), Via: n.GetVia()}
}

func edgeToPB(e Edge) *adminpb.Edge {
	return &adminpb.Edge{From: e.From, To: e.To, Metric: e.Metric}
}

func edgeFromPB(e *adminpb.Edge) Edge {
	return Edge{From: e.GetFrom(), To: e.GetTo(), Metric: e.GetMetric()}
}

func serviceInfoToPB(s ServiceInfo) *adminpb.ServiceInfo {
	return &adminpb.ServiceInfo{
		Service: sdk.ServiceToPB(s.Service), Source: string(s.Source), Ttl: sdk.DurationToPB(s.TTL),
		Expires: sdk.TimeToPB(s.Expires), Health: string(s.Health), LastError: s.LastError,
	}
}

func serviceInfoFromPB(s *adminpb.ServiceInfo) ServiceInfo {
	return ServiceInfo{
		Service: sdk.ServiceFromPB(s.GetService()), Source: registry.Source(s.GetSource()),
		TTL: sdk.DurationFromPB(s.GetTtl()), Expires: sdk.TimeFromPB(s.GetExpires()),
		Health: registry.Health(s.GetHealth()), LastError: s.GetLastError(),
	}
}

func pluginToPB(p PluginStatus) *adminpb.PluginStatus {
	return &adminpb.PluginStatus{
		Name: p.Name, Kind: string(p.Kind), Type: p.Type, Pid: int64(p.PID), Address: p.Address,
		State: p.State, Restarts: int32(p.Restarts), LastError: p.LastError, Since: sdk.TimeToPB(p.Since),
	}
}

func pluginFromPB(p *adminpb.PluginStatus) PluginStatus {
	return PluginStatus{
		Name: p.GetName(), Kind: sdk.Kind(p.GetKind()), Type: p.GetType(), PID: int(p.GetPid()),
		Address: p.GetAddress(), State: p.GetState(), Restarts: int(p.GetRestarts()),
		LastError: p.GetLastError(), Since: sdk.TimeFromPB(p.GetSince()),
	}
}

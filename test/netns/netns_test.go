package netns

import (
	"strings"
	"testing"
)

func TestLabLinksAndCut(t *testing.T) {
	l := New(t, 3)
	ping := func(from int, addr string) bool {
		return l.Hosts[from-1].Command("ping", "-c", "1", "-W", "1", addr).Run() == nil
	}
	if _, err := l.Hosts[0].Command("true").CombinedOutput(); err != nil {
		t.Fatal(err)
	}
	if !ping(1, l.Hosts[2].LinkAddr(1)) {
		t.Fatal("host 1 cannot reach host 3 over their link")
	}
	if !ping(1, l.Gateway) {
		t.Fatal("host 1 cannot reach the management bridge")
	}
	l.Cut(1, 3)
	if ping(1, l.Hosts[2].LinkAddr(1)) {
		t.Fatal("host 1 still reaches host 3 after the cut")
	}
	if !ping(1, l.Hosts[1].LinkAddr(1)) || !ping(3, l.Hosts[1].LinkAddr(3)) {
		t.Fatal("the cut between 1 and 3 broke their links to 2")
	}
	l.Mend(1, 3)
	if !ping(1, l.Hosts[2].LinkAddr(1)) {
		t.Fatal("host 1 does not reach host 3 after mending")
	}
	if !strings.HasPrefix(l.Hosts[2].Mgmt, strings.TrimSuffix(l.Gateway, "1")) {
		t.Fatal(l.Hosts[2].Mgmt)
	}
}

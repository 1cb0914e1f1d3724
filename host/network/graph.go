package network

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/microhost/microhost/host/network/networkpb"
)

// MaxDepth is how many hops below a node its peer messages describe; a node
// keeps nothing deeper.
const MaxDepth = 3

// tree is a node with the peers below it, as a peer message describes it.
// Paths in a tree are simple: no node appears twice on one root-to-leaf path.
type tree struct {
	ID       string
	Instance string
	Address  string
	Peers    []*tree
}

// maxTreeNodes bounds the nodes kept from one peer message, so that a huge
// (or hostile) message cannot take the node's memory.
const maxTreeNodes = 10000

// treeFromPB copies a wire node, keeping depth levels below the root and at
// most maxTreeNodes nodes, and dropping empty ids and nodes that repeat an
// ancestor.
func treeFromPB(n *networkpb.Node, depth int) *tree {
	budget := maxTreeNodes - 1
	return treeFromPBPath(n, depth, nil, &budget)
}

func treeFromPBPath(n *networkpb.Node, depth int, ancestors []string, budget *int) *tree {
	t := &tree{ID: n.GetId(), Instance: n.GetInstance(), Address: n.GetAddress()}
	if depth == 0 {
		return t
	}
	ancestors = append(ancestors, t.ID)
	for _, p := range n.GetPeers() {
		if p.GetId() == "" || slices.Contains(ancestors, p.GetId()) {
			continue
		}
		if *budget == 0 {
			break
		}
		*budget--
		t.Peers = append(t.Peers, treeFromPBPath(p, depth-1, ancestors, budget))
	}
	return t
}

// toPB encodes t down to depth levels below it, breadth first: a node's
// peers are listed only where it first appears, nearest the root, and
// elsewhere it is a leaf. That keeps every node's hop count and every link,
// while the message grows with the links within depth hops instead of with
// degree^depth.
func (t *tree) toPB(depth int) *networkpb.Node {
	root := &networkpb.Node{Id: t.ID, Instance: t.Instance, Address: t.Address}
	type item struct {
		src   *tree
		dst   *networkpb.Node
		depth int
	}
	expanded := map[string]bool{t.ID: true}
	queue := []item{{t, root, 0}}
	for len(queue) > 0 {
		it := queue[0]
		queue = queue[1:]
		if it.depth == depth {
			continue
		}
		for _, p := range it.src.Peers {
			if p.ID == t.ID {
				continue
			}
			child := &networkpb.Node{Id: p.ID, Instance: p.Instance, Address: p.Address}
			it.dst.Peers = append(it.dst.Peers, child)
			if !expanded[p.ID] {
				expanded[p.ID] = true
				queue = append(queue, item{p, child, it.depth + 1})
			}
		}
	}
	return root
}

// depths maps every node of t to its smallest depth below t (t itself is 0).
func (t *tree) depths() map[string]int {
	d := map[string]int{}
	var walk func(*tree, int)
	walk = func(n *tree, depth int) {
		if old, ok := d[n.ID]; !ok || depth < old {
			d[n.ID] = depth
		}
		for _, p := range n.Peers {
			walk(p, depth+1)
		}
	}
	walk(t, 0)
	return d
}

// NodeInfo describes one node of this node's graph.
type NodeInfo struct {
	ID       string   `json:"id"`
	Address  string   `json:"address,omitempty"`
	Instance string   `json:"instance,omitempty"`
	Hops     int      `json:"hops"`          // 0 for this node, 1 for a neighbour
	Via      []string `json:"via,omitempty"` // neighbours it is reachable through
}

// Edge is a link between two nodes of the graph, A < B.
type Edge struct {
	A string `json:"a"`
	B string `json:"b"`
}

// Graph is this node's view of the network, up to MaxDepth hops.
type Graph struct {
	Root  string     `json:"root"`
	Nodes []NodeInfo `json:"nodes"`
	Edges []Edge     `json:"edges"`
}

// buildGraph combines the neighbours' trees under root, keeping MaxDepth
// hops. It is recomputed from the trees every time, so a node with several
// parents disappears exactly when its last parent stops reporting it.
func buildGraph(root *tree) Graph {
	infos := map[string]*NodeInfo{}
	edges := map[Edge]bool{}
	var walk func(n *tree, hops int, via string)
	walk = func(n *tree, hops int, via string) {
		info := infos[n.ID]
		if info == nil {
			info = &NodeInfo{ID: n.ID, Hops: hops}
			infos[n.ID] = info
		}
		info.Hops = min(info.Hops, hops)
		if info.Address == "" {
			info.Address = n.Address
		}
		if info.Instance == "" {
			info.Instance = n.Instance
		}
		if via != "" && !slices.Contains(info.Via, via) {
			info.Via = append(info.Via, via)
		}
		if hops == MaxDepth {
			return
		}
		for _, p := range n.Peers {
			if p.ID == root.ID {
				continue
			}
			a, b := n.ID, p.ID
			if b < a {
				a, b = b, a
			}
			edges[Edge{a, b}] = true
			next := via
			if hops == 0 {
				next = p.ID
			}
			walk(p, hops+1, next)
		}
	}
	walk(root, 0, "")
	g := Graph{Root: root.ID}
	for _, id := range slices.Sorted(maps.Keys(infos)) {
		info := infos[id]
		slices.Sort(info.Via)
		g.Nodes = append(g.Nodes, *info)
	}
	g.Edges = slices.SortedFunc(maps.Keys(edges), func(x, y Edge) int {
		return strings.Compare(x.A+"\x00"+x.B, y.A+"\x00"+y.B)
	})
	return g
}

// DOT renders the graph for Graphviz.
func (g Graph) DOT() string {
	var b strings.Builder
	b.WriteString("graph network {\n")
	for _, n := range g.Nodes {
		attrs := fmt.Sprintf("label=%q", fmt.Sprintf("%s\n%d hops", n.ID, n.Hops))
		if n.ID == g.Root {
			attrs += ", shape=doublecircle"
		}
		fmt.Fprintf(&b, "  %q [%s];\n", n.ID, attrs)
	}
	for _, e := range g.Edges {
		fmt.Fprintf(&b, "  %q -- %q;\n", e.A, e.B)
	}
	b.WriteString("}\n")
	return b.String()
}

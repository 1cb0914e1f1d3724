package builtin

import (
	"fmt"
	"strings"

	"github.com/hashicorp/go-hclog"
)

// Reference renders the config { } arguments of every builtin as the
// Markdown tables of docs/config.md, straight from the schemas the plugins
// publish, so that the documentation cannot drift from the code.
func Reference() string {
	var b strings.Builder
	for _, name := range Names() {
		c := Plugins[name](hclog.NewNullLogger())
		info := c.Info()
		kind, typ, _ := strings.Cut(name, "-")
		fmt.Fprintf(&b, "#### `%s %q` (`%s`)\n\n", kind, typ, info.Name)
		attrs := c.Schema().Attributes
		if len(attrs) == 0 {
			b.WriteString("No arguments.\n\n")
			continue
		}
		b.WriteString("| argument | type | default | meaning |\n|---|---|---|---|\n")
		for _, a := range attrs {
			ty := string(a.Type)
			if a.Required {
				ty += ", required"
			}
			def := ""
			if a.Default != "" {
				def = "`" + a.Default + "`"
			}
			fmt.Fprintf(&b, "| `%s` | %s | %s | %s |\n", a.Name, ty, def, strings.ReplaceAll(a.Description, "|", `\|`))
		}
		b.WriteString("\n")
	}
	return b.String()
}

package projections

import (
	"fmt"
	"slices"
	"strings"

	"github.com/imsync/imsync/events"
)

// registry lists the projections `imsync replay` can run, by name. To add
// one, add a line: its name (the same as its Name()) and a constructor
// returning it empty.
var registry = map[string]func() Projection{
	"stats": func() Projection { return NewStats() },
}

// New returns a new, empty instance of the registered projection name.
func New(name string) (Projection, error) {
	f, ok := registry[name]
	if !ok {
		return nil, fmt.Errorf("%w: no projection %q (registered: %s)", events.ErrInvalidArgument, name, strings.Join(Names(), ", "))
	}
	return f(), nil
}

// Names lists the registered projections, sorted.
func Names() []string {
	names := make([]string, 0, len(registry))
	for n := range registry {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

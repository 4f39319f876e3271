package projections

import (
	"fmt"
	"slices"
	"strings"

	"github.com/imsync/imsync/events"
)

// registry lists the projections `imsync replay` can run, by name. To add
// one, add a line: its name (the same as its Name()) and a constructor
// returning it empty; a projection in another package calls Register from
// its init function instead.
var registry = map[string]func() Projection{
	"stats": func() Projection { return NewStats() },
}

// Register adds a projection to the registry under name (the same as its
// Name()), from the init function of the package that defines it (which
// the program must then import). It panics on a name already taken.
func Register(name string, newEmpty func() Projection) {
	if err := checkName(name); err != nil {
		panic(err)
	}
	if _, taken := registry[name]; taken {
		panic("projections: " + name + " registered twice")
	}
	registry[name] = newEmpty
}

// Located is implemented by projections that keep their state in files of
// their own (an index): a tool opens them in the directory it reserves for
// them before running them — `imsync replay` uses DATA/projections/NAME —
// and closes them afterwards.
type Located interface {
	Open(dir string) error
	Close() error
}

// CheckpointKeeper is implemented by projections that store their
// checkpoint together with their state, in the same write: a tool runs
// them with this CheckpointStore instead of checkpoint files. Such a
// projection neither loses nor repeats an event across restarts.
type CheckpointKeeper interface {
	Checkpoints() CheckpointStore
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

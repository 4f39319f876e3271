package projections

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sync"

	"github.com/imsync/imsync/events"
)

// Checkpoint is what a projection has applied: every event up to and
// including Position, and the state it built from them (for Stateful
// projections; nil otherwise).
type Checkpoint struct {
	Position events.Position
	State    []byte
}

// CheckpointStore keeps one checkpoint per projection name. Save must be
// atomic: after a crash, Load returns either the previous checkpoint or the
// new one, whole. Load reports ok == false when there is none.
type CheckpointStore interface {
	Load(ctx context.Context, name string) (cp Checkpoint, ok bool, err error)
	Save(ctx context.Context, name string, cp Checkpoint) error
	Delete(ctx context.Context, name string) error
}

var validName = regexp.MustCompile(`^[A-Za-z0-9._-]{1,128}$`)

func checkName(name string) error {
	if !validName.MatchString(name) || name == "." || name == ".." {
		return fmt.Errorf("%w: projection name %q: want 1-128 of [A-Za-z0-9._-]", events.ErrInvalidArgument, name)
	}
	return nil
}

// FileCheckpoints keeps checkpoints as files DIR/<name>.checkpoint. A save
// writes a temporary file, fsyncs it, renames it over the old one and
// fsyncs the directory: a crash leaves the old checkpoint or the new one.
type FileCheckpoints struct {
	Dir string
}

var _ CheckpointStore = FileCheckpoints{}

// fileCheckpoint is the file format (JSON; State base64).
type fileCheckpoint struct {
	Commit  uint64 `json:"commit"`
	Prepare uint64 `json:"prepare"`
	State   []byte `json:"state,omitempty"`
}

func (f FileCheckpoints) path(name string) string {
	return filepath.Join(f.Dir, name+".checkpoint")
}

// Load implements CheckpointStore.
func (f FileCheckpoints) Load(_ context.Context, name string) (Checkpoint, bool, error) {
	if err := checkName(name); err != nil {
		return Checkpoint{}, false, err
	}
	b, err := os.ReadFile(f.path(name))
	if errors.Is(err, os.ErrNotExist) {
		return Checkpoint{}, false, nil
	}
	if err != nil {
		return Checkpoint{}, false, fmt.Errorf("projections: load checkpoint: %w", err)
	}
	var fc fileCheckpoint
	if err := json.Unmarshal(b, &fc); err != nil {
		return Checkpoint{}, false, fmt.Errorf("projections: checkpoint %s is damaged: %w", f.path(name), err)
	}
	return Checkpoint{Position: events.Position{Commit: fc.Commit, Prepare: fc.Prepare}, State: fc.State}, true, nil
}

// Save implements CheckpointStore.
func (f FileCheckpoints) Save(_ context.Context, name string, cp Checkpoint) error {
	if err := checkName(name); err != nil {
		return err
	}
	b, err := json.Marshal(fileCheckpoint{Commit: cp.Position.Commit, Prepare: cp.Position.Prepare, State: cp.State})
	if err != nil {
		return err
	}
	if err := os.MkdirAll(f.Dir, 0o750); err != nil {
		return fmt.Errorf("projections: save checkpoint: %w", err)
	}
	tmp, err := os.CreateTemp(f.Dir, name+".checkpoint.tmp*")
	if err != nil {
		return fmt.Errorf("projections: save checkpoint: %w", err)
	}
	defer os.Remove(tmp.Name()) // no-op once renamed
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return fmt.Errorf("projections: save checkpoint: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("projections: save checkpoint: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("projections: save checkpoint: %w", err)
	}
	if err := os.Rename(tmp.Name(), f.path(name)); err != nil {
		return fmt.Errorf("projections: save checkpoint: %w", err)
	}
	return syncDir(f.Dir)
}

// Delete implements CheckpointStore.
func (f FileCheckpoints) Delete(_ context.Context, name string) error {
	if err := checkName(name); err != nil {
		return err
	}
	if err := os.Remove(f.path(name)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("projections: delete checkpoint: %w", err)
	}
	return syncDir(f.Dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("projections: sync %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("projections: sync %s: %w", dir, err)
	}
	return nil
}

// MemoryCheckpoints keeps checkpoints in memory (tests, one-off replays).
type MemoryCheckpoints struct {
	mu  sync.Mutex
	cps map[string]Checkpoint
}

var _ CheckpointStore = (*MemoryCheckpoints)(nil)

// Load implements CheckpointStore.
func (m *MemoryCheckpoints) Load(_ context.Context, name string) (Checkpoint, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	cp, ok := m.cps[name]
	cp.State = append([]byte(nil), cp.State...)
	return cp, ok, nil
}

// Save implements CheckpointStore.
func (m *MemoryCheckpoints) Save(_ context.Context, name string, cp Checkpoint) error {
	if err := checkName(name); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cps == nil {
		m.cps = map[string]Checkpoint{}
	}
	cp.State = append([]byte(nil), cp.State...)
	m.cps[name] = cp
	return nil
}

// Delete implements CheckpointStore.
func (m *MemoryCheckpoints) Delete(_ context.Context, name string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.cps, name)
	return nil
}

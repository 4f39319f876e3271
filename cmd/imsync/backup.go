package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/imsync/imsync/events"
)

// runBackup runs `imsync backup --data DIR --out DIR2`: a consistent copy
// of a data directory, whether its server runs or not. The events come
// from a checkpoint of the embedded store (taken by the running server
// through its control socket, or by backup itself when none runs); every
// other file of the directory (token key, certificate and its key, reset
// key, markers, projection checkpoints) is copied as it is. DIR2 must not
// exist or be empty. docs/operations.md ("Backup and restore") has the
// restore steps.
func runBackup(ctx context.Context, args []string, out io.Writer) error {
	fs := newFlagSet("backup")
	data := fs.String("data", "", "data directory of the server (running or stopped)")
	outDir := fs.String("out", "", "directory to write the copy into (must not exist, or be empty)")
	if err := parseFlags(ctx, fs, args); err != nil {
		return err
	}
	if *data == "" || *outDir == "" || fs.NArg() > 0 {
		return fmt.Errorf("%w: backup needs --data DIR and --out DIR2, and no other arguments", errUsage)
	}
	src, err := filepath.Abs(*data)
	if err != nil {
		return err
	}
	if real, err := filepath.EvalSymlinks(src); err == nil {
		src = real // a data directory reached through a link is copied, not the link
	}
	dst, err := filepath.Abs(*outDir)
	if err != nil {
		return err
	}
	if dst == src || strings.HasPrefix(dst, src+string(filepath.Separator)) {
		return fmt.Errorf("%w: backup: --out %s is inside the data directory %s", errUsage, dst, src)
	}
	switch entries, err := os.ReadDir(dst); {
	case err == nil && len(entries) > 0:
		return fmt.Errorf("%w: backup: --out %s is not empty; name a new directory", errUsage, dst)
	case err != nil && !errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("backup: %w", err)
	}
	d, err := inspectDataDir(src)
	if err != nil {
		return err
	}
	if !d.served() && !d.store {
		return fmt.Errorf("backup: %s is not the data directory of a server (no %s, no event store)", src, dataMarker)
	}
	created := false
	if _, err := os.Stat(dst); errors.Is(err, os.ErrNotExist) {
		created = true
	}
	if err := os.MkdirAll(dst, 0o700); err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	done := false
	defer func() {
		if done {
			return
		}
		// A failed backup leaves nothing that could pass for a good one.
		if created {
			os.RemoveAll(dst)
		} else if entries, err := os.ReadDir(dst); err == nil {
			for _, e := range entries {
				os.RemoveAll(filepath.Join(dst, e.Name()))
			}
		}
	}()

	res := map[string]any{"out": dst}
	if d.store {
		pos, online, err := checkpointStore(ctx, src, storeDir(dst))
		if err != nil {
			return err
		}
		res["position"], res["server_running"] = pos.Commit, online
	} else {
		res["events"] = "not in the data directory (the server keeps them in EventStoreDB: back them up with its own tools)"
	}
	files, err := copyDataFiles(src, dst)
	if err != nil {
		return err
	}
	if err := syncDir(dst); err != nil {
		return err
	}
	done = true
	res["files"] = files
	return json.NewEncoder(out).Encode(res)
}

// checkpointStore writes a checkpoint of data's embedded store into dst:
// through the running server's control socket, or directly when no server
// holds the store.
func checkpointStore(ctx context.Context, data, dst string) (pos events.Position, online bool, err error) {
	s, err := events.Open(storeDir(data), events.Options{ScavengeInterval: -1})
	if err == nil {
		defer s.Close()
		pos, err = s.Checkpoint(ctx, dst)
		if err != nil {
			return pos, false, fmt.Errorf("backup: %w", err)
		}
		return pos, false, nil
	}
	if !errors.Is(err, events.ErrInUse) {
		return pos, false, fmt.Errorf("backup: %w", err)
	}
	pos, err = requestCheckpoint(ctx, data, dst)
	if errors.Is(err, errNoControl) {
		return pos, true, fmt.Errorf("backup: %w: the store in %s is in use by a process that does not answer on %s (%v); "+
			"stop the server and run backup again", events.ErrInUse, data, controlSocket(data), err)
	}
	if err != nil {
		return pos, true, fmt.Errorf("backup: %w", err)
	}
	return pos, true, nil
}

// copyDataFiles copies every regular file of data except the event store,
// the control socket and temporary checkpoints: keys, certificate,
// markers, projection checkpoints (and whatever else a server keeps
// there). It returns the paths copied, relative to data.
func copyDataFiles(data, dst string) ([]string, error) {
	var copied []string
	err := filepath.WalkDir(data, func(path string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(data, path)
		if rel == "." {
			return nil
		}
		if e.IsDir() {
			if rel == "events" || strings.HasPrefix(e.Name(), checkpointTempPrefix) {
				return filepath.SkipDir
			}
			return os.MkdirAll(filepath.Join(dst, rel), 0o700)
		}
		if !e.Type().IsRegular() {
			return nil // the control socket, links
		}
		if strings.Contains(e.Name(), ".tmp") {
			return nil // a file being replaced (checkpoint saves)
		}
		info, err := e.Info()
		if err != nil {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if err := writeSynced(filepath.Join(dst, rel), b, info.Mode().Perm()); err != nil {
			return err
		}
		copied = append(copied, rel)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("backup: %w", err)
	}
	return copied, nil
}

func writeSynced(path string, b []byte, mode fs.FileMode) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, mode)
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

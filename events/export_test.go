package events

import "github.com/cockroachdb/pebble/v2/vfs"

// OpenOnFS opens a store on any pebble filesystem (tests use a crashable
// in-memory one to simulate power loss).
func OpenOnFS(fs vfs.FS, dir string, mustExist bool, opts Options) (*Embedded, error) {
	return open(dir, fs, mustExist, opts, openFlags{})
}

// StoredEvents counts the event records of stream physically on disk,
// scavenged or not.
func (s *Embedded) StoredEvents(stream string) (int, error) {
	s.mu.RLock()
	st := s.streams[stream]
	s.mu.RUnlock()
	if st == nil {
		return 0, nil
	}
	it, err := s.db.NewIter(nil)
	if err != nil {
		return 0, err
	}
	defer it.Close()
	n := 0
	lo, hi := eventKey(st.id, 0), eventKey(st.id+1, 0)
	for ok := it.SeekGE(lo); ok && string(it.Key()) < string(hi); ok = it.Next() {
		n++
	}
	return n, it.Error()
}

// StoredLogEntries counts the entries of the global log on disk.
func (s *Embedded) StoredLogEntries() (int, error) {
	it, err := s.db.NewIter(nil)
	if err != nil {
		return 0, err
	}
	defer it.Close()
	n := 0
	for ok := it.SeekGE([]byte{prefixLog}); ok && it.Key()[0] == prefixLog; ok = it.Next() {
		n++
	}
	return n, it.Error()
}

// LockError maps an error from taking the store's lock.
var LockError = lockError

package events

// StoreStats are a few numbers of the embedded store's pebble database
// that tell an operator how it is doing (see docs/operations.md).
type StoreStats struct {
	DiskBytes           uint64 // on-disk size of every file of the database
	WALBytes            uint64 // live write-ahead log bytes
	MemTableBytes       uint64 // memtables in memory
	L0Files             int64  // sorted tables in level 0 (many: compaction falls behind)
	L0Sublevels         int32
	ReadAmplification   int    // tables a point read may consult
	CompactionDebtBytes uint64 // estimated bytes to compact for a settled LSM
	Compactions         int64  // since open
	Flushes             int64  // since open
	BlockCacheHits      int64
	BlockCacheMisses    int64
}

// Stats reads the store's current StoreStats; ok is false once the store
// is closed.
func (s *Embedded) Stats() (st StoreStats, ok bool) {
	if s.beginRead() != nil {
		return StoreStats{}, false
	}
	defer s.endRead()
	m := s.db.Metrics()
	return StoreStats{
		DiskBytes:           m.DiskSpaceUsage(),
		WALBytes:            m.WAL.Size,
		MemTableBytes:       m.MemTable.Size,
		L0Files:             m.Levels[0].TablesCount,
		L0Sublevels:         m.Levels[0].Sublevels,
		ReadAmplification:   m.ReadAmp(),
		CompactionDebtBytes: m.Compact.EstimatedDebt,
		Compactions:         m.Compact.Count,
		Flushes:             m.Flush.Count,
		BlockCacheHits:      m.BlockCache.Hits,
		BlockCacheMisses:    m.BlockCache.Misses,
	}, true
}

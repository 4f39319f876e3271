package events_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"github.com/imsync/imsync/events"
)

// TestPowerLoss checks that "acknowledged" means "synced": writers append on
// a filesystem that can be cloned as it would look after a power cut (only
// synced data, or synced data plus a random part of the rest). Every
// append acknowledged before the cut must be in the clone, and nothing torn.
func TestPowerLoss(t *testing.T) {
	const perWriter = 3000 // events per writer: bounds time and memory, also under -race
	for _, unsynced := range []int{0, 50} {
		t.Run(fmt.Sprintf("unsynced=%d%%", unsynced), func(t *testing.T) {
			fs := vfs.NewCrashableMem()
			s, err := events.OpenOnFS(fs, "store", false, events.Options{ScavengeInterval: -1})
			if err != nil {
				t.Fatal(err)
			}
			var mu sync.Mutex
			var acked []ack
			var pause sync.RWMutex // held by the cutter while it checks a clone
			ctx, cancel := context.WithCancel(context.Background())
			var wg sync.WaitGroup
			for w := range crashWriters {
				wg.Add(1)
				go func() {
					defer wg.Done()
					stream := fmt.Sprintf("crash-%d", w)
					for next := events.Revision(0); ctx.Err() == nil && next < perWriter; {
						batch, exp := crashAppend(w, stream, next)
						n := len(batch)
						pause.RLock()
						_, err := s.AppendToStream(ctx, stream, exp, batch...)
						pause.RUnlock()
						if err != nil {
							if ctx.Err() == nil {
								t.Error(err)
							}
							return
						}
						mu.Lock()
						for i, e := range batch {
							acked = append(acked, ack{stream, next + events.Revision(i), e.ID})
						}
						mu.Unlock()
						next += events.Revision(n)
					}
				}()
			}
			rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
			for cut := range 5 {
				// Cut at a random moment while the writers run.
				want := (cut*crashWriters*perWriter/5 + rng.IntN(crashWriters*perWriter/5)) * 9 / 10
				for {
					mu.Lock()
					n := len(acked)
					mu.Unlock()
					if n >= want {
						break
					}
					time.Sleep(time.Millisecond)
				}
				mu.Lock()
				before := append([]ack(nil), acked...)
				mu.Unlock()
				// Everything in before was acknowledged, hence synced, by now.
				clone := fs.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: unsynced, RNG: randFor(rng)})
				pause.Lock() // the clone was taken mid-flight; hold writers while checking it
				r, err := events.OpenOnFS(clone, "store", true, events.Options{ScavengeInterval: -1})
				if err != nil {
					t.Fatalf("cut %d: reopen: %v", cut, err)
				}
				total := verifyStore(t, r, before)
				r.Close()
				pause.Unlock()
				t.Logf("cut %d: %d acknowledged, %d stored after the cut", cut, len(before), total)
			}
			cancel()
			wg.Wait()
			s.Close()
		})
	}
}

func randFor(rng *rand.Rand) *rand.Rand {
	return rand.New(rand.NewPCG(rng.Uint64(), rng.Uint64()))
}

package main

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/asynkron/protoactor-go/cluster"

	"github.com/imsync/imsync/actors"
)

// clusterSettings are serve's cluster flags (docs/cluster.md).
type clusterSettings struct {
	name       string // --cluster
	advertise  string // --advertise HOST:PORT, this member's remoting address
	peers      string // --peers HOST:PORT,... the other members' --advertise
	etcd       string // --etcd HOST:PORT,... etcd's client endpoints, instead of --peers
	etcdAccess        // --etcd-cacert, --etcd-cert, --etcd-key, --etcd-user (cluster_etcd_tls.go)
	// --cluster-reset-identity: record this node's secrets as the
	// cluster's, replacing the record in the store (cluster_identity.go).
	resetIdentity bool
}

var clusterNameRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$`)

// apply checks the cluster flags and sets acfg's membership. Without
// --cluster the member is alone in this process (the default); with it,
// the store must be one the members share.
func (c clusterSettings) apply(acfg *actors.Config, storeURL string) error {
	if given := c.etcdAccess.flags(); len(given) > 0 && c.etcd == "" {
		verb, pron := "configure", "they need"
		if len(given) == 1 {
			verb, pron = "configures", "it needs"
		}
		return fmt.Errorf("%w: serve: %s %s the connection to etcd: %s --etcd HOST:PORT,...", errUsage, strings.Join(given, ", "), verb, pron)
	}
	if c.name == "" {
		if c.advertise != "" || c.peers != "" || c.etcd != "" || c.resetIdentity {
			return fmt.Errorf("%w: serve: --advertise, --peers, --etcd and --cluster-reset-identity need --cluster NAME", errUsage)
		}
		return nil
	}
	if !clusterNameRe.MatchString(c.name) {
		return fmt.Errorf("%w: serve: --cluster %q: want a name of letters, digits, '.', '_' or '-' (at most 63)", errUsage, c.name)
	}
	if storeURL == "" {
		return fmt.Errorf("%w: serve: --cluster needs a store the members share (--store esdb://HOST:2113?...); "+
			"the embedded store belongs to one process", errUsage)
	}
	if c.advertise == "" {
		return fmt.Errorf("%w: serve: --cluster needs --advertise HOST:PORT, the TCP address the other members reach this one at", errUsage)
	}
	host, port, err := actors.SplitHostPort(c.advertise)
	if err != nil {
		return fmt.Errorf("%w: serve: --advertise: %v", errUsage, err)
	}
	if c.etcd != "" && c.peers != "" {
		return fmt.Errorf("%w: serve: --etcd and --peers are two ways to find the members: give one", errUsage)
	}
	var provider cluster.ClusterProvider
	if c.etcd != "" {
		endpoints, err := actors.EtcdEndpoints(c.etcd)
		if err != nil {
			return fmt.Errorf("%w: serve: --etcd: %v", errUsage, err)
		}
		ecfg, err := c.etcdAccess.config(endpoints)
		if err != nil {
			return err
		}
		// Checks that etcd answers: nothing is created when it does not.
		if provider, err = actors.EtcdMembersConfig(ecfg); err != nil {
			return withStatus(exitUnavailable, "serve: --etcd: %v%s", err, etcdHint(err))
		}
	} else {
		var peers []string
		for _, p := range strings.Split(c.peers, ",") {
			if p = strings.TrimSpace(p); p != "" {
				peers = append(peers, p)
			}
		}
		if provider, err = actors.StaticPeers(c.advertise, peers); err != nil {
			return fmt.Errorf("%w: serve: --peers: %v", errUsage, err)
		}
	}
	acfg.ClusterName, acfg.Provider, acfg.Host, acfg.Port = c.name, provider, host, port
	return nil
}

// checkNewSecrets refuses --new-key and --new-cert in cluster mode unless
// the node also makes its secrets the cluster's: a new key or certificate
// on one node alone would differ from the others'.
func (c clusterSettings) checkNewSecrets(allow dataDirAllow) error {
	if c.name == "" || c.resetIdentity || (!allow.key && !allow.cert) {
		return nil
	}
	return fmt.Errorf("%w: serve: --new-key and --new-cert in a cluster would give this node secrets the others do not have: "+
		"copy token.key, server.crt, server.key and reset.key from another node's data directory instead, "+
		"or add --cluster-reset-identity to make the new ones the cluster's (then copy them to every node; docs/cluster.md)", errUsage)
}

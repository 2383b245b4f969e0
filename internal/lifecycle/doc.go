// Package lifecycle tells weft's node components why they are being stopped:
// for an uninstall, when they must remove what they put on the node (pinned
// programs and maps, tcx links, cgroup programs, the CNI entry), or for
// anything else — an upgrade, a restart, a node drain — when they must leave
// all of it in place, so meshed pods keep their redirection and new pods of
// enrolled namespaces keep failing closed while the component is away.
//
// The chart's pre-delete hook (weft-operator mark-uninstalling) calls
// MarkUninstalling before Helm deletes anything: it annotates the weft-agent
// and weft-ztunnel DaemonSets with weft.io/uninstalling=true. A node
// component asks Uninstalling (or keeps a Watcher) when SIGTERM arrives: a
// DaemonSet that is gone, being deleted, or annotated means uninstall. When
// the answer is unsure (the API server cannot be reached) the answer is no:
// leaving state behind is recoverable (weft-agent --cleanup), removing it on
// an upgrade breaks the mesh of a running node.
//
// Helm deletes the components' ServiceAccounts and RBAC right after their
// DaemonSets, so a check made only at SIGTERM may be refused; a Watcher
// follows the DaemonSet while the component runs and answers from what it
// last saw when the API server refuses.
//
// The package needs only the apps/v1 client (kubernetes.Interface satisfies
// Client), so that the CNI plugin binary, which hosts the CNI installer, does
// not link the whole clientset. It must not import any weft component.
package lifecycle

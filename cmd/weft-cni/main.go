// Command weft-cni is weft's chained CNI plugin: it has the node agent
// enroll each new pod of a meshed namespace before the pod's containers
// start. See package daemon/cniplugin.
package main

import "github.com/weftmesh/weft/daemon/cniplugin"

func main() { cniplugin.Main() }

// Command etcd is etcd's own server, built in this module so that its version is
// the one k8s.io/kubernetes selects.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }

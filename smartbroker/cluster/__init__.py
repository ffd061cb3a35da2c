"""Cluster mode (issue 15): nodes coordinated by etcd. Imported only when ``--etcd`` (or
``--workers``) is given: the single-node path never imports this package."""

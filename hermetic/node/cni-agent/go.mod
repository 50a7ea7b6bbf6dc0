module incident-harness/cni-agent

go 1.21

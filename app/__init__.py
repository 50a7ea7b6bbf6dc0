"""orders-api: the service under test, as deployed in the seed incident."""

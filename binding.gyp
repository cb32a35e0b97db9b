{
  "targets": [
    {
      "target_name": "sluice_net",
      "sources": ["native/sluice-net.c"],
      "cflags": ["-O2", "-Wall", "-Wextra"]
    }
  ]
}

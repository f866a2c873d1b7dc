{
  "targets": [
    {
      "target_name": "seek",
      "sources": ["seek.c"]
    }
  ]
}

{
  "targets": [
    {
      "target_name": "ringbroker",
      "sources": ["src/addon.c"],
      "include_dirs": ["../../include"],
      "defines": ["NAPI_VERSION=8"],
      "cflags": ["-std=gnu11", "-Wall", "-Wextra", "-Wno-unused-parameter", "-Werror"],
      "libraries": [
        "<(module_root_dir)/../../target/release/libringbroker.a",
        "-lpthread",
        "-ldl",
        "-lm"
      ]
    }
  ]
}

"""Generated gRPC/protobuf code of the NextFlow API (`make proto`)."""

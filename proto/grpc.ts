/** Loads proto/*.proto with @grpc/proto-loader; the TypeScript types in proto/gen are generated from the same files. */
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import type { ProtoGrpcType as GraderProto } from "./gen/grader.js";
import { protoPath } from "./paths.js";

export const LOADER_OPTIONS: protoLoader.Options = {
  keepCase: true,
  longs: Number,
  enums: String,
  defaults: true,
  oneofs: true,
};

export function loadGraderProto(): GraderProto {
  const def = protoLoader.loadSync(protoPath("grader.proto"), LOADER_OPTIONS);
  return grpc.loadPackageDefinition(def) as unknown as GraderProto;
}

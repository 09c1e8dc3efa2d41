// A foreign gRPC client for Nabla's server: @grpc/grpc-js + @grpc/proto-loader loading the project's .proto at run time.
// usage: node client.js PROTO_DIR ADDRESS INPUT_F32_FILE  → prints one JSON line with the results.
const path = require('path');
const fs = require('fs');
const grpc = require('@grpc/grpc-js');
const loader = require('@grpc/proto-loader');

const [protoDir, address, inputFile] = process.argv.slice(2);
const opts = { keepCase: true, longs: String, enums: String, defaults: true, oneofs: true };
const inference = grpc.loadPackageDefinition(loader.loadSync(path.join(protoDir, 'grpc_service.proto'), opts)).inference;
const health = grpc.loadPackageDefinition(loader.loadSync(path.join(protoDir, 'health.proto'), opts)).grpc.health.v1;
const client = new inference.GRPCInferenceService(address, grpc.credentials.createInsecure());
const healthClient = new health.Health(address, grpc.credentials.createInsecure());

const call = (c, method, req) => new Promise((resolve) => c[method](req, (err, res) => resolve(err ? { code: err.code, details: err.details } : res)));

(async () => {
  const out = {};
  out.live = (await call(client, 'ServerLive', {})).live;
  out.health = (await call(healthClient, 'Check', { service: '' })).status;
  const meta = await call(client, 'ModelMetadata', { name: 'mnist' });
  out.input = meta.inputs[0].name;
  const raw = fs.readFileSync(inputFile);
  const res = await call(client, 'ModelInfer', {
    model_name: 'mnist', id: 'from-node',
    inputs: [{ name: 'Input3', datatype: 'FP32', shape: [1, 1, 28, 28] }],
    raw_input_contents: [raw],
  });
  out.id = res.id;
  const buf = res.raw_output_contents[0];
  out.output = Array.from({ length: buf.length / 4 }, (_, i) => buf.readFloatLE(i * 4));
  out.missing = (await call(client, 'ModelInfer', { model_name: 'nope', inputs: [] })).code;
  console.log(JSON.stringify(out));
  client.close();
  healthClient.close();
})();

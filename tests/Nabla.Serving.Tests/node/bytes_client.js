// BYTES through a foreign gRPC client: @grpc/grpc-js + @grpc/proto-loader, bytes_contents in, raw length-prefixed out.
// usage: node bytes_client.js PROTO_DIR ADDRESS  → prints one JSON line with the results.
const path = require('path');
const grpc = require('@grpc/grpc-js');
const loader = require('@grpc/proto-loader');

const [protoDir, address] = process.argv.slice(2);
const opts = { keepCase: true, longs: String, enums: String, defaults: true, oneofs: true };
const inference = grpc.loadPackageDefinition(loader.loadSync(path.join(protoDir, 'grpc_service.proto'), opts)).inference;
const client = new inference.GRPCInferenceService(address, grpc.credentials.createInsecure());
const call = (method, req) => new Promise((resolve) => client[method](req, (err, res) => resolve(err ? { code: err.code, details: err.details } : res)));

// The protocol's raw BYTES layout: each element a 4-byte little-endian length, then its bytes.
const unpack = (buf) => {
  const out = [];
  for (let i = 0; i < buf.length;) { const n = buf.readUInt32LE(i); out.push(buf.subarray(i + 4, i + 4 + n).toString('utf8')); i += 4 + n; }
  return out;
};

(async () => {
  const text = ['cat', 'bird', 'ünïcode'];
  const res = await call('ModelInfer', {
    model_name: 'strings', id: 'node-bytes',
    inputs: [
      { name: 'text', datatype: 'BYTES', shape: [3], contents: { bytes_contents: text.map((s) => Buffer.from(s, 'utf8')) } },
      { name: 'numbers', datatype: 'BYTES', shape: [3], contents: { bytes_contents: ['1', '2.5', '-3'].map((s) => Buffer.from(s)) } },
    ],
    outputs: [{ name: 'echo' }, { name: 'label' }],
  });
  if (res.code !== undefined) { console.log(JSON.stringify({ error: res })); client.close(); return; }
  const out = { id: res.id, datatypes: res.outputs.map((o) => o.datatype) };
  out.echo = unpack(res.raw_output_contents[0]);
  const l = res.raw_output_contents[1];
  out.label = Array.from({ length: l.length / 8 }, (_, i) => Number(l.readBigInt64LE(i * 8)));
  console.log(JSON.stringify(out));
  client.close();
})();

#!/usr/bin/env node
// Calling maskserve from Node.js with @grpc/grpc-js and @grpc/proto-loader:
// the .proto files in proto/ are loaded at run time (no code generation).
//
//   cd client/node && npm ci && node maskserve_example.js --target localhost:50051
//
// Lists the models, embeds sentences (mean pooling, L2-normalised), fits a
// BERT-whitening profile by streaming sentences, embeds with it, deletes it,
// and generates text unary and streaming when a model with TASK_GENERATE is
// loaded. --json prints one JSON summary at the end (the integration test
// reads it). Every call has a deadline; the channel retries UNAVAILABLE with
// gRPC's retry policy (service config).
'use strict';

const path = require('path');
const fs = require('fs');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const PROTO_DIR = path.resolve(__dirname, '..', '..', 'proto');

const SERVICE_CONFIG = JSON.stringify({
  methodConfig: [{
    name: [{service: 'maskserve.v1.Models'}, {service: 'maskserve.v1.Embedding'},
           {service: 'maskserve.v1.Generation'}],
    retryPolicy: {
      maxAttempts: 4,
      initialBackoff: '0.1s',
      maxBackoff: '2s',
      backoffMultiplier: 2,
      retryableStatusCodes: ['UNAVAILABLE'],
    },
  }],
});

const SENTENCES = [
  'A man is playing a guitar.',
  'A man is playing a flute.',
  'A woman is slicing an onion.',
  'The cat sleeps on the sofa.',
  'Two dogs run on the beach.',
  'It is raining in the city.',
  'A child is reading a book.',
  'The stock market fell sharply today.',
];

function parseArgs(argv) {
  const args = {target: 'localhost:50051', prompt: 'Once upon a time', maxNewTokens: 16,
                timeout: 60, json: false};
  const names = {'--target': 'target', '--embed-model': 'embedModel',
                 '--generate-model': 'generateModel', '--prompt': 'prompt',
                 '--max-new-tokens': 'maxNewTokens', '--timeout': 'timeout',
                 '--tls-ca': 'tlsCa', '--tls-cert': 'tlsCert', '--tls-key': 'tlsKey',
                 '--tls-server-name': 'tlsServerName'};
  for (let i = 0; i < argv.length; i++) {
    let [flag, value] = argv[i].split(/=(.*)/s, 2);
    if (flag === '--json') { args.json = true; continue; }
    if (flag === '--tls') { args.tls = true; continue; }
    if (!(flag in names)) throw new Error(`unknown argument ${argv[i]}`);
    if (value === undefined) value = argv[++i];
    args[names[flag]] = value;
  }
  args.maxNewTokens = Number(args.maxNewTokens);
  args.timeout = Number(args.timeout);
  return args;
}

function loadServices() {
  const files = fs.readdirSync(path.join(PROTO_DIR, 'maskserve', 'v1'))
      .filter((f) => f.endsWith('.proto')).map((f) => `maskserve/v1/${f}`);
  const def = protoLoader.loadSync(files, {
    includeDirs: [PROTO_DIR], keepCase: true, longs: String, enums: String, defaults: true,
  });
  return grpc.loadPackageDefinition(def).maskserve.v1;
}

function credentials(args) {
  if (!args.tls && !args.tlsCa) return grpc.credentials.createInsecure();
  const read = (p) => (p ? fs.readFileSync(p) : null);
  return grpc.credentials.createSsl(read(args.tlsCa), read(args.tlsKey), read(args.tlsCert));
}

// Promise wrapper for a unary call with a deadline.
function unary(client, method, request, timeoutS) {
  return new Promise((resolve, reject) => {
    client[method](request, {deadline: Date.now() + timeoutS * 1000},
                   (err, response) => (err ? reject(err) : resolve(response)));
  });
}

function cosine(a, b) {
  let dot = 0, na = 0, nb = 0;
  for (let i = 0; i < a.length; i++) { dot += a[i] * b[i]; na += a[i] * a[i]; nb += b[i] * b[i]; }
  return na && nb ? dot / Math.sqrt(na * nb) : 0;
}

async function run(args) {
  const v1 = loadServices();
  const options = {
    'grpc.service_config': SERVICE_CONFIG,
    'grpc.enable_retries': 1,
    'grpc.max_receive_message_length': 64 << 20,
    'grpc.max_send_message_length': 64 << 20,
  };
  if (args.tlsServerName) options['grpc.ssl_target_name_override'] = args.tlsServerName;
  const creds = credentials(args);
  const models = new v1.Models(args.target, creds, options);
  // One channel for all three stubs.
  const channelOverride = models.getChannel();
  const embedding = new v1.Embedding(args.target, creds, {...options, channelOverride});
  const generation = new v1.Generation(args.target, creds, {...options, channelOverride});
  const log = args.json ? (...a) => console.error(...a) : (...a) => console.log(...a);
  const summary = {};

  try {
    // Wait for the connection (the server may still be starting).
    await new Promise((resolve, reject) => models.waitForReady(
        Date.now() + args.timeout * 1000, (err) => (err ? reject(err) : resolve())));

    const listed = (await unary(models, 'ListModels', {}, args.timeout)).models;
    summary.models = listed.map((m) => ({name: m.name, state: m.state, tasks: m.tasks}));
    for (const m of listed) log(`model ${m.name}: ${m.state} ${m.architecture} hidden=${m.hidden_size}`);
    const ready = listed.filter((m) => m.state === 'MODEL_STATE_READY');
    const embedModel = args.embedModel ||
        (ready.find((m) => m.tasks.includes('TASK_EMBED')) || {}).name;
    const genModel = args.generateModel ||
        (ready.find((m) => m.tasks.includes('TASK_GENERATE')) || {}).name;

    if (embedModel) {
      const r = await unary(embedding, 'Embed', {
        model: embedModel, texts: SENTENCES.slice(0, 3), pooling: 'POOLING_MEAN', normalize: true,
      }, args.timeout);
      const vecs = r.embeddings.map((e) => e.values);
      const sims = [cosine(vecs[0], vecs[1]), cosine(vecs[0], vecs[2])];
      log(`embed ${embedModel}: ${vecs.length} x ${r.dimensions}; ` +
          `cos(0,1)=${sims[0].toFixed(4)} cos(0,2)=${sims[1].toFixed(4)}`);
      summary.embed = {model: embedModel, count: vecs.length, dimensions: r.dimensions,
                       norms: vecs.map((v) => Math.sqrt(v.reduce((s, x) => s + x * x, 0))),
                       cosines: sims};

      // BERT-whitening: client streaming; the first message names the
      // model, profile and parameters, later ones only carry texts.
      const profile = 'node-example';
      const k = 4;
      const prof = await new Promise((resolve, reject) => {
        const call = embedding.FitWhitening({deadline: Date.now() + args.timeout * 1000},
                                            (err, resp) => (err ? reject(err) : resolve(resp)));
        call.write({model: embedModel, profile, k, texts: SENTENCES.slice(0, 4)});
        call.write({texts: SENTENCES.slice(4)});
        call.end();
      });
      const w = await unary(embedding, 'Embed', {
        model: embedModel, texts: SENTENCES.slice(0, 2), whitening_profile: profile,
      }, args.timeout);
      log(`whiten ${embedModel}/${profile}: fitted on ${prof.num_samples} sentences, ` +
          `dim ${prof.dim} -> k ${prof.k}; whitened embed has ${w.dimensions} dimensions`);
      const listedProfiles = (await unary(embedding, 'ListWhitening', {model: embedModel},
                                          args.timeout)).profiles.map((p) => p.name);
      await unary(embedding, 'DeleteWhitening', {model: embedModel, profile}, args.timeout);
      summary.whiten = {profile, num_samples: Number(prof.num_samples), dim: prof.dim, k: prof.k,
                        dimensions: w.dimensions, listed: listedProfiles.includes(profile)};
    }

    const request = {model: genModel || embedModel || '', prompt: args.prompt,
                     max_new_tokens: args.maxNewTokens, strategy: 'STRATEGY_GREEDY'};
    if (!genModel) {
      // Still show what the server answers: a gRPC status, not a crash.
      let code = null;
      if (request.model) {
        code = await unary(generation, 'Generate', request, args.timeout)
            .then(() => 'OK', (err) => grpc.status[err.code]);
      }
      log(`generate: skipped (no READY model with TASK_GENERATE; Generate on ` +
          `'${request.model}' -> ${code})`);
      summary.generate = {skipped: 'no READY model with TASK_GENERATE', code};
    } else {
      try {
        const g = await unary(generation, 'Generate', request, args.timeout);
        const text = g.sequences[0].text;
        // Unset sub-messages arrive as null (proto-loader fills only scalars).
        const usage = g.usage || {completion_tokens: 0};
        const tps = g.timing ? g.timing.tokens_per_second : 0;
        log(`generate ${genModel}: '${args.prompt}' -> '${text}' ` +
            `(${usage.completion_tokens} tokens, ${tps.toFixed(1)} tokens/s)`);
        // Server streaming: text deltas as they are decoded.
        const stream = await new Promise((resolve, reject) => {
          const pieces = [];
          let finish = null;
          const call = generation.GenerateStream(request,
                                                 {deadline: Date.now() + args.timeout * 1000});
          call.on('data', (msg) => {
            pieces.push(msg.text);
            if (msg.finish_reason !== 'FINISH_REASON_UNSPECIFIED') finish = msg.finish_reason;
          });
          call.on('error', reject);
          call.on('end', () => resolve({pieces, finish}));
        });
        log(`stream ${genModel}: ${stream.pieces.length} messages, finish=${stream.finish}`);
        summary.generate = {model: genModel, text, completion_tokens: usage.completion_tokens,
                            stream_text: stream.pieces.join(''),
                            stream_messages: stream.pieces.length, stream_finish: stream.finish};
      } catch (err) {
        if (err.code !== grpc.status.UNIMPLEMENTED) throw err;
        log(`generate: skipped (server: UNIMPLEMENTED: ${err.details})`);
        summary.generate = {skipped: err.details, code: 'UNIMPLEMENTED'};
      }
    }
  } finally {
    models.close();
  }
  if (args.json) console.log(JSON.stringify(summary));
}

run(parseArgs(process.argv.slice(2))).catch((err) => {
  const code = err.code !== undefined ? grpc.status[err.code] : 'ERROR';
  console.error(`error: ${code}: ${err.details || err.message}`);
  process.exit(2);
});

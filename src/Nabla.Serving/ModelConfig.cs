using System.Globalization;
using System.Text.Json;

namespace Nabla.Serving;

/// <summary>
/// A declared input or output: wire datatype and dims (-1 = variable), without the batch dim. <paramref name="AnyRank"/>
/// marks a tensor taken from a model file that does not state its rank; its shape is then not checked.
/// </summary>
public sealed record TensorSpec(string Name, string Datatype, long[] Dims, bool AnyRank = false);

/// <summary>Which of a model's version folders are served (Triton's ModelVersionPolicy).</summary>
public abstract record VersionPolicy
{
    /// <summary>The numerically greatest <paramref name="Count"/> versions (the default, with 1).</summary>
    public sealed record Latest(int Count) : VersionPolicy;
    public sealed record All : VersionPolicy;
    public sealed record Specific(long[] Versions) : VersionPolicy;

    public IEnumerable<long> Select(IEnumerable<long> available) => this switch
    {
        Latest l => available.OrderDescending().Take(l.Count).Order(),
        Specific s => available.Where(s.Versions.Contains).Order(),
        _ => available.Order(),
    };
}

/// <summary>
/// Queue policy of the dynamic batcher: <paramref name="MaxQueueSize"/> (0 = unbounded) rejects at once when full;
/// <paramref name="DefaultTimeoutMicroseconds"/> (0 = none) rejects a request still queued after it, with REJECT.
/// DELAY and <paramref name="AllowTimeoutOverride"/> are parsed and reported; DELAY simply never times out.
/// </summary>
public sealed record QueuePolicy(string TimeoutAction, long DefaultTimeoutMicroseconds, bool AllowTimeoutOverride, int MaxQueueSize);

/// <summary>
/// Triton's dynamic_batching block, run by <see cref="DynamicBatcher"/>: requests are merged along dim 0 up to
/// max_batch_size, leaving early at a preferred size, else when the oldest has waited MaxQueueDelayMicroseconds.
/// Batches run in arrival order, so responses keep it whether or not PreserveOrdering is set.
/// </summary>
public sealed record DynamicBatchingSettings(int[] PreferredBatchSizes, long MaxQueueDelayMicroseconds, bool PreserveOrdering, QueuePolicy? DefaultQueuePolicy);

/// <summary>
/// A model's configuration: the JSON form of Triton's ModelConfig (snake_case names) read from
/// <c>&lt;repo&gt;/&lt;model&gt;/config.json</c>. Datatypes may be written as <c>"TYPE_FP32"</c> (<c>data_type</c>) or
/// <c>"FP32"</c> (<c>datatype</c>); <c>input</c>/<c>output</c> may also be spelled <c>inputs</c>/<c>outputs</c>;
/// 64-bit numbers may be bare or quoted. Inputs and outputs left out are taken from the model file.
/// </summary>
public sealed class ModelConfig
{
    public required string Name { get; init; }
    public string Platform { get; init; } = "nabla_onnx";
    public int MaxBatchSize { get; init; }
    public IReadOnlyList<TensorSpec> Inputs { get; init; } = [];
    public IReadOnlyList<TensorSpec> Outputs { get; init; } = [];
    public VersionPolicy VersionPolicy { get; init; } = new VersionPolicy.Latest(1);
    public DynamicBatchingSettings? DynamicBatching { get; init; }
    public string DefaultModelFilename { get; init; } = "model.onnx";
    public IReadOnlyDictionary<string, string> Parameters { get; init; } = new Dictionary<string, string>();
    /// <summary>
    /// How many executions of one version may run at once (Triton's <c>instance_group</c> counts summed, or a plain
    /// <c>instance_count</c>; default 1). Each instance is its own executor over the shared graph and weights.
    /// </summary>
    public int InstanceCount { get; init; } = 1;

    /// <summary>The most instances a version may have (each runs on its own thread while busy).</summary>
    public const int MaxInstances = 64;

    /// <summary>The shape clients see: <c>[-1] + dims</c> for batching models, else dims.</summary>
    public long[] ExposedShape(TensorSpec t) => MaxBatchSize > 0 ? [-1, .. t.Dims] : t.Dims;

    /// <summary>Parses config.json text; <paramref name="directoryName"/> is the model's folder, which a <c>name</c> must equal.</summary>
    /// <exception cref="ModelFormatException">naming the field and the reason.</exception>
    public static ModelConfig Parse(string json, string directoryName)
    {
        JsonDocument doc;
        try { doc = JsonDocument.Parse(json, new JsonDocumentOptions { MaxDepth = 64, CommentHandling = JsonCommentHandling.Skip, AllowTrailingCommas = true }); }
        catch (JsonException e) { throw new ModelFormatException($"config.json of '{directoryName}': invalid JSON: {e.Message}"); }
        using (doc)
        {
            var root = doc.RootElement;
            if (root.ValueKind != JsonValueKind.Object) throw Err(directoryName, "the top level must be an object");
            string name = Str(root, "name", directoryName) ?? directoryName;
            if (name != directoryName) throw Err(directoryName, $"name '{name}' differs from the folder name '{directoryName}'");
            string platform = Str(root, "platform", directoryName) ?? Str(root, "backend", directoryName) ?? "nabla_onnx";
            if (platform is not ("nabla_onnx" or "onnxruntime_onnx" or "onnx"))
                throw Err(directoryName, $"platform '{platform}' is not served; Nabla serves ONNX models (nabla_onnx)");
            long maxBatch = Int(root, "max_batch_size", directoryName) ?? 0;
            if (maxBatch is < 0 or > int.MaxValue) throw Err(directoryName, $"max_batch_size {maxBatch} must be in [0, {int.MaxValue}]");
            var file = Str(root, "default_model_filename", directoryName) ?? "model.onnx";
            if (file.Length == 0 || file != Path.GetFileName(file) || file is "." or "..")
                throw Err(directoryName, $"default_model_filename '{file}' must be a plain file name");
            var parameters = new Dictionary<string, string>();
            if (root.TryGetProperty("parameters", out var ps) && ps.ValueKind == JsonValueKind.Object)
                foreach (var p in ps.EnumerateObject())
                    parameters[p.Name] = p.Value.ValueKind == JsonValueKind.Object && p.Value.TryGetProperty("string_value", out var sv)
                        ? sv.ToString() : p.Value.ToString();
            return new ModelConfig
            {
                Name = name,
                Platform = "nabla_onnx",
                MaxBatchSize = (int)maxBatch,
                Inputs = Tensors(root, directoryName, "input", "inputs"),
                Outputs = Tensors(root, directoryName, "output", "outputs"),
                VersionPolicy = Policy(root, directoryName),
                DynamicBatching = Batching(root, directoryName, (int)maxBatch),
                DefaultModelFilename = file,
                Parameters = parameters,
                InstanceCount = Instances(root, directoryName),
            };
        }
    }

    /// <summary>
    /// <c>"instance_count": N</c>, or Triton's <c>"instance_group": [{"count": N, "kind": "KIND_CPU"}, ...]</c> (counts
    /// add up; a group without count has 1). Only CPU instances exist: KIND_GPU and KIND_MODEL are refused.
    /// </summary>
    static int Instances(JsonElement root, string model)
    {
        bool hasCount = root.TryGetProperty("instance_count", out var ic) && ic.ValueKind != JsonValueKind.Null;
        bool hasGroups = root.TryGetProperty("instance_group", out var groups) && groups.ValueKind != JsonValueKind.Null;
        if (hasCount && hasGroups) throw Err(model, "give either instance_count or instance_group, not both");
        long total;
        if (hasCount) total = AsLong(ic) ?? throw Err(model, "'instance_count' must be an integer");
        else if (hasGroups)
        {
            if (groups.ValueKind != JsonValueKind.Array) throw Err(model, "instance_group must be an array");
            total = 0;
            foreach (var g in groups.EnumerateArray())
            {
                if (g.ValueKind != JsonValueKind.Object) throw Err(model, "each instance_group entry must be an object");
                var kind = Str(g, "kind", model) ?? "KIND_CPU";
                if (kind is not ("KIND_CPU" or "KIND_AUTO"))
                    throw Err(model, $"instance_group kind '{kind}' is not available; Nabla serves on the CPU (KIND_CPU)");
                long n = Int(g, "count", model) ?? 1;
                if (n < 1) throw Err(model, $"instance_group count {n} must be at least 1");
                total += n;
                if (total > MaxInstances) break;
            }
            if (total == 0) total = 1;
        }
        else return 1;
        if (total is < 1 or > MaxInstances) throw Err(model, $"the instance count {total} must be in [1, {MaxInstances}]");
        return (int)total;
    }

    static ModelFormatException Err(string model, string what) => new($"config.json of '{model}': {what}");

    static string? Str(JsonElement o, string key, string model)
    {
        if (!o.TryGetProperty(key, out var v) || v.ValueKind == JsonValueKind.Null) return null;
        return v.ValueKind == JsonValueKind.String ? v.GetString() : throw Err(model, $"'{key}' must be a string");
    }

    static long? Int(JsonElement o, string key, string model)
    {
        if (!o.TryGetProperty(key, out var v) || v.ValueKind == JsonValueKind.Null) return null;
        return AsLong(v) ?? throw Err(model, $"'{key}' must be an integer");
    }

    static long? AsLong(JsonElement v) => v.ValueKind switch
    {
        JsonValueKind.Number when v.TryGetInt64(out var n) => n,
        JsonValueKind.String when long.TryParse(v.GetString(), NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out var n) => n,
        _ => null,
    };

    static bool Bool(JsonElement o, string key, string model)
    {
        if (!o.TryGetProperty(key, out var v) || v.ValueKind == JsonValueKind.Null) return false;
        return v.ValueKind switch { JsonValueKind.True => true, JsonValueKind.False => false, _ => throw Err(model, $"'{key}' must be a boolean") };
    }

    static List<TensorSpec> Tensors(JsonElement root, string model, string key, string alias)
    {
        if (!root.TryGetProperty(key, out var arr) && !root.TryGetProperty(alias, out arr)) return [];
        if (arr.ValueKind != JsonValueKind.Array) throw Err(model, $"'{key}' must be an array");
        var list = new List<TensorSpec>();
        foreach (var t in arr.EnumerateArray())
        {
            if (t.ValueKind != JsonValueKind.Object) throw Err(model, $"each '{key}' entry must be an object");
            var name = Str(t, "name", model);
            if (string.IsNullOrEmpty(name)) throw Err(model, $"an '{key}' entry has no name");
            if (list.Any(x => x.Name == name)) throw Err(model, $"{key} '{name}' is declared twice");
            var typeName = Str(t, "data_type", model) ?? Str(t, "datatype", model) ?? throw Err(model, $"{key} '{name}' has no data_type");
            var wire = WireTypes.FromConfigName(typeName) ?? throw Err(model, $"{key} '{name}': unknown data_type '{typeName}'");
            if (!t.TryGetProperty("dims", out var dimsEl) && !t.TryGetProperty("shape", out dimsEl))
                throw Err(model, $"{key} '{name}' has no dims");
            if (dimsEl.ValueKind != JsonValueKind.Array) throw Err(model, $"{key} '{name}': dims must be an array");
            var dims = new List<long>();
            foreach (var d in dimsEl.EnumerateArray())
            {
                var v = AsLong(d) ?? throw Err(model, $"{key} '{name}': dims must be integers");
                if (v == 0 || v < -1) throw Err(model, $"{key} '{name}': dim {v} must be positive or -1 (variable)");
                dims.Add(v);
            }
            if (dims.Count == 0) throw Err(model, $"{key} '{name}': dims may not be empty");
            list.Add(new TensorSpec(name, wire, [.. dims]));
        }
        return list;
    }

    static VersionPolicy Policy(JsonElement root, string model)
    {
        if (!root.TryGetProperty("version_policy", out var p) || p.ValueKind == JsonValueKind.Null) return new VersionPolicy.Latest(1);
        if (p.ValueKind != JsonValueKind.Object) throw Err(model, "version_policy must be an object");
        if (p.TryGetProperty("latest", out var l))
        {
            long n = l.ValueKind == JsonValueKind.Object ? Int(l, "num_versions", model) ?? 1 : 1;
            if (n is < 1 or > int.MaxValue) throw Err(model, $"version_policy.latest.num_versions {n} must be at least 1");
            return new VersionPolicy.Latest((int)n);
        }
        if (p.TryGetProperty("all", out _)) return new VersionPolicy.All();
        if (p.TryGetProperty("specific", out var s))
        {
            if (s.ValueKind != JsonValueKind.Object || !s.TryGetProperty("versions", out var vs) || vs.ValueKind != JsonValueKind.Array)
                throw Err(model, "version_policy.specific needs a 'versions' array");
            var versions = new List<long>();
            foreach (var v in vs.EnumerateArray())
            {
                var n = AsLong(v) ?? throw Err(model, "version_policy.specific.versions must be integers");
                if (n < 1) throw Err(model, $"version {n} must be positive");
                versions.Add(n);
            }
            return new VersionPolicy.Specific([.. versions]);
        }
        throw Err(model, "version_policy must hold one of latest, all, specific");
    }

    static DynamicBatchingSettings? Batching(JsonElement root, string model, int maxBatch)
    {
        if (!root.TryGetProperty("dynamic_batching", out var b) || b.ValueKind == JsonValueKind.Null) return null;
        if (b.ValueKind != JsonValueKind.Object) throw Err(model, "dynamic_batching must be an object");
        if (maxBatch == 0) throw Err(model, "dynamic_batching needs max_batch_size > 0");
        var preferred = new List<int>();
        if (b.TryGetProperty("preferred_batch_size", out var pb))
        {
            if (pb.ValueKind != JsonValueKind.Array) throw Err(model, "dynamic_batching.preferred_batch_size must be an array");
            foreach (var v in pb.EnumerateArray())
            {
                var n = AsLong(v) ?? throw Err(model, "preferred_batch_size entries must be integers");
                if (n < 1 || n > maxBatch) throw Err(model, $"preferred batch size {n} must be in [1, max_batch_size {maxBatch}]");
                preferred.Add((int)n);
            }
        }
        long delay = Int(b, "max_queue_delay_microseconds", model) ?? 0;
        if (delay < 0) throw Err(model, "max_queue_delay_microseconds must not be negative");
        QueuePolicy? policy = null;
        if (b.TryGetProperty("default_queue_policy", out var q) && q.ValueKind == JsonValueKind.Object)
        {
            var action = Str(q, "timeout_action", model) ?? "REJECT";
            if (action is not ("REJECT" or "DELAY")) throw Err(model, $"timeout_action '{action}' must be REJECT or DELAY");
            long timeout = Int(q, "default_timeout_microseconds", model) ?? 0;
            long size = Int(q, "max_queue_size", model) ?? 0;
            if (timeout < 0 || size is < 0 or > int.MaxValue) throw Err(model, "default_queue_policy values must not be negative");
            policy = new QueuePolicy(action, timeout, Bool(q, "allow_timeout_override", model), (int)size);
        }
        return new DynamicBatchingSettings([.. preferred], delay, Bool(b, "preserve_ordering", model), policy);
    }

    /// <summary>Writes the configuration as Triton prints it: snake_case names, TYPE_ enums, 64-bit numbers bare.</summary>
    public void WriteJson(Utf8JsonWriter w)
    {
        w.WriteStartObject();
        w.WriteString("name", Name);
        w.WriteString("platform", Platform);
        w.WriteString("backend", "nabla");
        w.WriteStartObject("version_policy");
        switch (VersionPolicy)
        {
            case VersionPolicy.Latest l: w.WriteStartObject("latest"); w.WriteNumber("num_versions", l.Count); w.WriteEndObject(); break;
            case VersionPolicy.Specific s:
                w.WriteStartObject("specific");
                w.WriteStartArray("versions");
                foreach (var v in s.Versions) w.WriteNumberValue(v);
                w.WriteEndArray();
                w.WriteEndObject();
                break;
            default: w.WriteStartObject("all"); w.WriteEndObject(); break;
        }
        w.WriteEndObject();
        w.WriteNumber("max_batch_size", MaxBatchSize);
        WriteTensors(w, "input", Inputs);
        WriteTensors(w, "output", Outputs);
        w.WriteStartArray("instance_group");
        w.WriteStartObject();
        w.WriteString("name", Name);
        w.WriteNumber("count", InstanceCount);
        w.WriteString("kind", "KIND_CPU");
        w.WriteEndObject();
        w.WriteEndArray();
        if (DynamicBatching is { } b)
        {
            w.WriteStartObject("dynamic_batching");
            w.WriteStartArray("preferred_batch_size");
            foreach (var p in b.PreferredBatchSizes) w.WriteNumberValue(p);
            w.WriteEndArray();
            w.WriteNumber("max_queue_delay_microseconds", b.MaxQueueDelayMicroseconds);
            w.WriteBoolean("preserve_ordering", b.PreserveOrdering);
            if (b.DefaultQueuePolicy is { } q)
            {
                w.WriteStartObject("default_queue_policy");
                w.WriteString("timeout_action", q.TimeoutAction);
                w.WriteNumber("default_timeout_microseconds", q.DefaultTimeoutMicroseconds);
                w.WriteBoolean("allow_timeout_override", q.AllowTimeoutOverride);
                w.WriteNumber("max_queue_size", q.MaxQueueSize);
                w.WriteEndObject();
            }
            w.WriteEndObject();
        }
        w.WriteString("default_model_filename", DefaultModelFilename);
        w.WriteStartObject("parameters");
        foreach (var (k, v) in Parameters)
        {
            w.WriteStartObject(k);
            w.WriteString("string_value", v);
            w.WriteEndObject();
        }
        w.WriteEndObject();
        w.WriteEndObject();
    }

    static void WriteTensors(Utf8JsonWriter w, string key, IReadOnlyList<TensorSpec> list)
    {
        w.WriteStartArray(key);
        foreach (var t in list)
        {
            w.WriteStartObject();
            w.WriteString("name", t.Name);
            w.WriteString("data_type", WireTypes.ConfigName(t.Datatype));
            w.WriteStartArray("dims");
            foreach (var d in t.Dims) w.WriteNumberValue(d);
            w.WriteEndArray();
            w.WriteEndObject();
        }
        w.WriteEndArray();
    }
}

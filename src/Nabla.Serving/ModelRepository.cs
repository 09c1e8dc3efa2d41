using System.Diagnostics;
using System.Globalization;
using System.Text.RegularExpressions;
using Microsoft.Extensions.Logging;
using Nabla.Graph;
using Nabla.Interop.Onnx;

namespace Nabla.Serving;

/// <summary>Triton's model and version states, as the repository index prints them.</summary>
public enum ModelState { Unknown, Loading, Ready, Unavailable, Unloading }

/// <summary>One row of the repository index: a model version (or a model with no loadable version) and its state.</summary>
public sealed record IndexEntry(string Name, string? Version, ModelState State, string Reason)
{
    public string StateName => State.ToString().ToUpperInvariant();
}

/// <summary>Cumulative counters of one loaded version (Triton's statistics extension); durations in nanoseconds.</summary>
public sealed class VersionStats
{
    internal long SuccessCount, SuccessNs, FailCount, FailNs, QueueCount, QueueNs;
    internal long InputCount, InputNs, InferCount, InferNs, OutputCount, OutputNs;
    internal long InferenceCount, ExecutionCount, LastInferenceMs;

    public long Success => Interlocked.Read(ref SuccessCount);
    public long Failures => Interlocked.Read(ref FailCount);
    public long Inferences => Interlocked.Read(ref InferenceCount);
    public long Executions => Interlocked.Read(ref ExecutionCount);

    internal static void Add(ref long count, ref long ns, long ticks)
    {
        Interlocked.Increment(ref count);
        Interlocked.Add(ref ns, (long)(ticks * (1e9 / Stopwatch.Frequency)));
    }
}

/// <summary>A loaded, runnable model version. Executions are serialized by <see cref="Gate"/> (one instance).</summary>
public sealed class ModelVersion
{
    public required string ModelName { get; init; }
    public required long Version { get; init; }
    /// <summary>The configuration this version runs with: the declared one, completed from the model file.</summary>
    public required ModelConfig Config { get; init; }
    public required OnnxModel Model { get; init; }
    public SemaphoreSlim Gate { get; } = new(1, 1);
    public VersionStats Stats { get; } = new();
    public string VersionString => Version.ToString(CultureInfo.InvariantCulture);
}

/// <summary>
/// The model repository: <c>DIR/&lt;model&gt;/config.json</c> (optional) and numeric version folders
/// <c>DIR/&lt;model&gt;/&lt;n&gt;/model.onnx</c>. Loads every model at start; a model or version that fails is kept in
/// the index as UNAVAILABLE with its reason and never stops the others. Load and unload replace a model's entry
/// atomically, so requests already holding a <see cref="ModelVersion"/> finish on it.
/// </summary>
public sealed partial class ModelRepository
{
    sealed record Slot(long Version, ModelState State, string Reason, ModelVersion? Loaded);

    sealed record Entry(string Name, ModelConfig? Config, string Reason, IReadOnlyList<Slot> Slots)
    {
        public IEnumerable<Slot> Ready => Slots.Where(s => s.State == ModelState.Ready);
    }

    readonly Dictionary<string, Entry> entries = new(StringComparer.Ordinal);
    readonly Lock entriesLock = new();
    readonly SemaphoreSlim mutate = new(1, 1);
    readonly ILogger logger;

    public string Root { get; }

    public ModelRepository(string root, ILogger? logger = null)
    {
        Root = Path.GetFullPath(root);
        this.logger = logger ?? Microsoft.Extensions.Logging.Abstractions.NullLogger.Instance;
    }

    [GeneratedRegex("^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")]
    private static partial Regex NamePattern();

    /// <summary>A model name is a folder name: letters, digits, '_', '-', '.', not starting with '.' or '-', at most 128 characters.</summary>
    public static bool IsValidName(string name) => NamePattern().IsMatch(name) && !name.Contains("..", StringComparison.Ordinal);

    /// <summary>The model folder names present in the repository (invalid and hidden names skipped).</summary>
    public IReadOnlyList<string> ScanNames()
    {
        if (!Directory.Exists(Root)) return [];
        return Directory.EnumerateDirectories(Root).Select(Path.GetFileName).OfType<string>()
            .Where(IsValidName).Order(StringComparer.Ordinal).ToList();
    }

    /// <summary>Loads every model in the repository; failures are recorded, never thrown.</summary>
    public async Task LoadAllAsync(CancellationToken ct = default)
    {
        if (!Directory.Exists(Root)) throw new DirectoryNotFoundException($"model repository '{Root}' does not exist");
        foreach (var name in ScanNames())
        {
            ct.ThrowIfCancellationRequested();
            try { await LoadAsync(name, null, ct).ConfigureAwait(false); }
            catch (ServingException e) { logger.LogWarning("model '{Model}' is unavailable: {Reason}", name, e.Message); }
        }
    }

    /// <summary>
    /// Loads (or reloads) one model from its folder. With <paramref name="configJson"/>, that configuration replaces
    /// config.json. When a reload yields no ready version, the versions already loaded keep serving.
    /// </summary>
    /// <exception cref="ServingException">400 for a bad name or when no version could be loaded, 404 when the folder is missing.</exception>
    public async Task LoadAsync(string name, string? configJson = null, CancellationToken ct = default)
    {
        CheckName(name);
        var dir = Path.Combine(Root, name);
        if (!Directory.Exists(dir)) throw ServingException.NotFound($"model '{name}' is not in the repository");
        await mutate.WaitAsync(ct).ConfigureAwait(false);
        try
        {
            var old = Get(name);
            if (old is null || !old.Ready.Any())
                Set(new Entry(name, old?.Config, "loading", [.. (old?.Slots ?? []).Select(s => s with { State = ModelState.Loading, Reason = "loading" })]));
            var fresh = await Task.Run(() => Build(name, dir, configJson), ct).ConfigureAwait(false);
            if (!fresh.Ready.Any() && old is not null && old.Ready.Any())
                throw ServingException.Invalid($"failed to load '{name}' ({Reasons(fresh)}); the versions already loaded keep serving");
            Set(fresh);
            if (!fresh.Ready.Any()) throw ServingException.Invalid($"failed to load '{name}': {Reasons(fresh)}");
            foreach (var s in fresh.Slots)
            {
                if (s.State == ModelState.Ready) logger.LogInformation("loaded model '{Model}' version {Version}", name, s.Version);
                else logger.LogWarning("model '{Model}' version {Version} is unavailable: {Reason}", name, s.Version, s.Reason);
            }
        }
        finally { mutate.Release(); }
    }

    static string Reasons(Entry e) => e.Slots.Count == 0 ? e.Reason : string.Join("; ", e.Slots.Select(s => $"version {s.Version}: {s.Reason}"));

    /// <summary>Unloads every version of a model; requests already running finish, new ones get 503.</summary>
    public async Task UnloadAsync(string name, CancellationToken ct = default)
    {
        CheckName(name);
        await mutate.WaitAsync(ct).ConfigureAwait(false);
        try
        {
            var old = Get(name);
            if (old is null)
            {
                if (!Directory.Exists(Path.Combine(Root, name))) throw ServingException.NotFound($"unknown model '{name}'");
                Set(new Entry(name, null, "unloaded", []));
                return;
            }
            Set(old with { Reason = "unloaded", Slots = [.. old.Slots.Select(s => new Slot(s.Version, ModelState.Unavailable, "unloaded", null))] });
            logger.LogInformation("unloaded model '{Model}'", name);
        }
        finally { mutate.Release(); }
    }

    static void CheckName(string name)
    {
        if (!IsValidName(name)) throw ServingException.Invalid($"invalid model name '{WireTypes.Clip(name)}'");
    }

    Entry? Get(string name)
    {
        lock (entriesLock) return entries.GetValueOrDefault(name);
    }

    void Set(Entry e)
    {
        lock (entriesLock) entries[e.Name] = e;
    }

    Entry[] Snapshot()
    {
        lock (entriesLock) return [.. entries.Values.OrderBy(e => e.Name, StringComparer.Ordinal)];
    }

    /// <summary>Reads the folder and loads each selected version; never throws for a bad model.</summary>
    Entry Build(string name, string dir, string? configJson)
    {
        ModelConfig declared;
        try
        {
            var path = Path.Combine(dir, "config.json");
            declared = configJson is not null ? ModelConfig.Parse(configJson, name)
                : File.Exists(path) ? ModelConfig.Parse(File.ReadAllText(path), name)
                : new ModelConfig { Name = name };
        }
        catch (Exception e) when (e is ModelFormatException or IOException or UnauthorizedAccessException)
        {
            return new Entry(name, null, e.Message, []);
        }
        var available = new List<long>();
        foreach (var sub in Directory.EnumerateDirectories(dir))
        {
            var v = Path.GetFileName(sub);
            // NOTE: as in Triton, only positive decimal names without a leading zero are versions; other folders are ignored.
            if (v.Length > 0 && v.Length <= 18 && v[0] != '0' && v.All(char.IsAsciiDigit)) available.Add(long.Parse(v, CultureInfo.InvariantCulture));
        }
        var selected = declared.VersionPolicy.Select(available).ToList();
        if (selected.Count == 0)
            return new Entry(name, declared, available.Count == 0 ? "no version folders (1/, 2/, ...)" : "the version policy selects no version", []);
        var slots = new List<Slot>();
        foreach (var v in selected)
        {
            var file = Path.Combine(dir, v.ToString(CultureInfo.InvariantCulture), declared.DefaultModelFilename);
            try
            {
                if (!File.Exists(file)) throw new ModelFormatException($"{declared.DefaultModelFilename} not found in version folder {v}");
                var model = OnnxModel.Load(file);
                var config = Complete(declared, model.Graph);
                slots.Add(new Slot(v, ModelState.Ready, "", new ModelVersion { ModelName = name, Version = v, Config = config, Model = model }));
            }
            catch (Exception e) when (e is NablaException or IOException or UnauthorizedAccessException or OutOfMemoryException)
            {
                slots.Add(new Slot(v, ModelState.Unavailable, e.Message, null));
            }
        }
        return new Entry(name, declared, "", slots);
    }

    /// <summary>Checks the declared inputs and outputs against the graph and fills in what the config leaves out.</summary>
    internal static ModelConfig Complete(ModelConfig c, Graph.Graph g)
    {
        var graphInputs = g.Inputs.Where(v => !g.Initializers.ContainsKey(v.Name)).ToList();
        var inputs = c.Inputs.Count > 0 ? c.Inputs : [.. graphInputs.Select(v => FromGraph(v, c.MaxBatchSize))];
        var outputs = c.Outputs.Count > 0 ? c.Outputs : [.. g.Outputs.Select(v => FromGraph(v, c.MaxBatchSize))];
        foreach (var t in inputs)
        {
            var v = g.Inputs.FirstOrDefault(x => x.Name == t.Name)
                ?? throw new ModelFormatException($"config input '{t.Name}' is not an input of the model; its inputs are {string.Join(", ", graphInputs.Select(x => x.Name))}");
            Match(c, t, v, "input");
        }
        foreach (var v in graphInputs)
            if (!inputs.Any(t => t.Name == v.Name)) throw new ModelFormatException($"model input '{v.Name}' is not declared in the config");
        foreach (var t in outputs)
        {
            var v = g.Outputs.FirstOrDefault(x => x.Name == t.Name)
                ?? throw new ModelFormatException($"config output '{t.Name}' is not an output of the model; its outputs are {string.Join(", ", g.Outputs.Select(x => x.Name))}");
            Match(c, t, v, "output");
        }
        return new ModelConfig
        {
            Name = c.Name, Platform = c.Platform, MaxBatchSize = c.MaxBatchSize, Inputs = inputs, Outputs = outputs,
            VersionPolicy = c.VersionPolicy, DynamicBatching = c.DynamicBatching, DefaultModelFilename = c.DefaultModelFilename,
            Parameters = c.Parameters,
        };
    }

    static TensorSpec FromGraph(ValueInfo v, int maxBatch)
    {
        if (v.DType is not { } dt) throw new ModelFormatException($"model tensor '{v.Name}' has no element type; declare it in config.json");
        if (v.Shape is null) return new TensorSpec(v.Name, WireTypes.FromDType(dt), [], AnyRank: true);
        var dims = v.Shape.Select(d => d.Value ?? -1).ToArray();
        if (maxBatch > 0)
        {
            if (dims.Length == 0) throw new ModelFormatException($"model tensor '{v.Name}' is a scalar, but max_batch_size > 0 needs a batch dimension");
            dims = dims[1..];
        }
        return new TensorSpec(v.Name, WireTypes.FromDType(dt), dims);
    }

    static void Match(ModelConfig c, TensorSpec t, ValueInfo v, string kind)
    {
        if (v.DType is { } dt && WireTypes.FromDType(dt) != t.Datatype)
            throw new ModelFormatException($"config {kind} '{t.Name}' is {t.Datatype}, but the model's is {WireTypes.FromDType(dt)}");
        if (v.Shape is null || t.AnyRank) return;
        var want = c.ExposedShape(t);
        if (v.Shape.Length != want.Length)
            throw new ModelFormatException($"config {kind} '{t.Name}' has shape [{string.Join(", ", want)}] (rank {want.Length}), but the model's is [{string.Join(", ", v.Shape)}]");
        for (int i = c.MaxBatchSize > 0 ? 1 : 0; i < want.Length; i++)
            if (v.Shape[i].Value is { } fixedDim && want[i] != -1 && want[i] != fixedDim)
                throw new ModelFormatException($"config {kind} '{t.Name}' has shape [{string.Join(", ", want)}], but the model's is [{string.Join(", ", v.Shape)}]");
    }

    // ---- queries ----

    /// <summary>The version a request names, or the highest ready one; 404 for unknown model/version, 503 for one not ready.</summary>
    public ModelVersion Resolve(string model, string? version)
    {
        var e = Known(model);
        if (!string.IsNullOrEmpty(version))
        {
            var slot = FindSlot(e, version);
            return slot.Loaded is { } lv && slot.State == ModelState.Ready ? lv
                : throw ServingException.Unavailable($"model '{model}' version {version} is not ready: {slot.Reason}");
        }
        return e.Ready.LastOrDefault()?.Loaded
            ?? throw ServingException.Unavailable($"model '{model}' has no ready version: {Reasons(e)}");
    }

    Entry Known(string model) =>
        (IsValidName(model) ? Get(model) : null) ?? throw ServingException.NotFound($"unknown model '{WireTypes.Clip(model)}'");

    static Slot FindSlot(Entry e, string version)
    {
        if (!long.TryParse(version, NumberStyles.None, CultureInfo.InvariantCulture, out var v))
            throw ServingException.NotFound($"unknown version '{WireTypes.Clip(version)}' of model '{e.Name}'");
        return e.Slots.FirstOrDefault(s => s.Version == v)
            ?? throw ServingException.NotFound($"unknown version {version} of model '{e.Name}'; it serves {(e.Slots.Count == 0 ? "none" : string.Join(", ", e.Slots.Select(s => s.Version)))}");
    }

    /// <summary>Whether a model (or one of its versions) is ready, and why not; 404 for an unknown model or version.</summary>
    public (bool Ready, string Reason) IsReady(string model, string? version)
    {
        var e = Known(model);
        if (!string.IsNullOrEmpty(version))
        {
            var s = FindSlot(e, version);
            return (s.State == ModelState.Ready, s.Reason);
        }
        return e.Ready.Any() ? (true, "") : (false, Reasons(e));
    }

    /// <summary>The ready version numbers of a model, ascending.</summary>
    public IReadOnlyList<long> ReadyVersions(string model) => [.. Known(model).Ready.Select(s => s.Version)];

    /// <summary>The configuration of a version (or of the highest ready one, else the declared one).</summary>
    public ModelConfig ConfigOf(string model, string? version)
    {
        var e = Known(model);
        if (!string.IsNullOrEmpty(version))
            return FindSlot(e, version).Loaded?.Config ?? e.Config ?? throw ServingException.Unavailable($"model '{model}' has no valid configuration: {e.Reason}");
        return e.Ready.LastOrDefault()?.Loaded?.Config ?? e.Config
            ?? throw ServingException.Unavailable($"model '{model}' has no valid configuration: {e.Reason}");
    }

    /// <summary>Loaded versions for the statistics endpoint, filtered by model and version when given.</summary>
    public IReadOnlyList<ModelVersion> LoadedVersions(string? model, string? version)
    {
        IEnumerable<Entry> es = string.IsNullOrEmpty(model) ? Snapshot() : [Known(model)];
        if (!string.IsNullOrEmpty(version))
        {
            var e = es.Single();
            var s = FindSlot(e, version);
            return s.Loaded is { } lv ? [lv] : [];
        }
        return [.. es.SelectMany(e => e.Slots).Select(s => s.Loaded).OfType<ModelVersion>()];
    }

    /// <summary>Every model in the repository: one row per served version, one per model with none; folders never loaded show UNAVAILABLE.</summary>
    public IReadOnlyList<IndexEntry> Index(bool readyOnly)
    {
        var rows = new List<IndexEntry>();
        var snap = Snapshot();
        var names = new SortedSet<string>(snap.Select(e => e.Name), StringComparer.Ordinal);
        foreach (var n in ScanNames()) names.Add(n);
        foreach (var n in names)
        {
            var e = snap.FirstOrDefault(x => x.Name == n);
            if (e is null) rows.Add(new IndexEntry(n, null, ModelState.Unavailable, "not loaded"));
            else if (e.Slots.Count == 0) rows.Add(new IndexEntry(n, null, ModelState.Unavailable, e.Reason));
            else rows.AddRange(e.Slots.Select(s => new IndexEntry(n, s.Version.ToString(CultureInfo.InvariantCulture), s.State, s.Reason)));
        }
        return readyOnly ? [.. rows.Where(r => r.State == ModelState.Ready)] : rows;
    }
}

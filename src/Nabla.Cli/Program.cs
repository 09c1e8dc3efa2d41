using System.Diagnostics;
using System.Globalization;
using System.Reflection;
using System.Text.Json;
using Nabla;
using Nabla.Cli;
using Nabla.Data;
using Nabla.IO;
using Nabla.Optim;
using Nabla.Training;

CultureInfo.DefaultThreadCurrentCulture = CultureInfo.InvariantCulture;
CultureInfo.CurrentCulture = CultureInfo.InvariantCulture;

var commands = new Dictionary<string, (string summary, string help, Func<string[], int> run)>
{
    ["quickstart"] = ("train a small CNN on the bundled Fashion-MNIST and report test accuracy", Commands.QuickstartHelp, Commands.Quickstart),
    ["train"] = ("train a built-in model on a dataset", Commands.TrainHelp, Commands.Train),
    ["eval"] = ("evaluate a checkpoint on a dataset's test split", Commands.EvalHelp, Commands.Eval),
    ["inspect"] = ("list the tensors, dtypes, shapes and parameter count of a checkpoint", Commands.InspectHelp, Commands.Inspect),
    ["convert"] = ("convert tensors between .safetensors and PyTorch .pt/.pth/.bin, or export a checkpoint to ONNX", InteropCommands.ConvertHelp, InteropCommands.Convert),
    ["serve"] = ("serve ONNX models over REST and gRPC (Open Inference Protocol)", ServeCommands.ServeHelp, ServeCommands.Serve),
    ["run"] = ("run an ONNX model on .npy or .pb inputs and write its outputs as .npy", OnnxCommands.RunHelp, OnnxCommands.Run),
    ["hub"] = ("download a Hugging Face Hub repository into the shared cache", HubCommands.HubHelp, HubCommands.Hub),
    ["generate"] = ("continue a prompt with a GPT-2 or Llama model, streaming the text", ModelCommands.GenerateHelp, ModelCommands.Generate),
    ["classify"] = ("classify an image with a ViT or ResNet model folder", ModelCommands.ClassifyHelp, ModelCommands.Classify),
};

void Usage(TextWriter w)
{
    w.WriteLine("nabla: deep learning in pure .NET");
    w.WriteLine();
    w.WriteLine("usage: nabla <command> [options]   (nabla <command> --help for its options)");
    w.WriteLine();
    foreach (var (name, (summary, _, _)) in commands) w.WriteLine($"  {name,-12} {summary}");
}

if (args.Length == 0 || args[0] is "--help" or "-h" or "help")
{
    Usage(Console.Out);
    return args.Length == 0 ? 1 : 0;
}
if (args[0] == "--version")
{
    Console.WriteLine(typeof(Tensor).Assembly.GetName().Version);
    return 0;
}
if (!commands.TryGetValue(args[0], out var cmd))
{
    Console.Error.WriteLine($"nabla: unknown command '{args[0]}'");
    Usage(Console.Error);
    return 2;
}
var rest = args[1..];
if (rest.Contains("--help") || rest.Contains("-h"))
{
    Console.WriteLine(cmd.help);
    return 0;
}
try
{
    return cmd.run(rest);
}
catch (UsageException e)
{
    Console.Error.WriteLine($"nabla {args[0]}: {e.Message}");
    Console.Error.WriteLine($"run 'nabla {args[0]} --help' for the options");
    return 2;
}
catch (NablaException e)
{
    Console.Error.WriteLine($"nabla {args[0]}: error: {e.Message}");
    return 1;
}
catch (IOException e)
{
    Console.Error.WriteLine($"nabla {args[0]}: I/O error: {e.Message}");
    return 1;
}
catch (UnauthorizedAccessException e)
{
    Console.Error.WriteLine($"nabla {args[0]}: access denied: {e.Message}");
    return 1;
}

static class Commands
{
    public const string QuickstartHelp = """
        nabla quickstart: train a small CNN on the bundled Fashion-MNIST and report test accuracy.

        options:
          --epochs N          epochs to train (default 3)
          --batch-size N      batch size (default 64)
          --lr X              Adam learning rate (default 0.001), annealed to 0 by a per-step cosine
          --seed N            random seed (default 0)
          --output-dir DIR    where checkpoints, metrics.csv and TensorBoard events go (default runs/quickstart)
          --json              print one JSON object with the final metrics as the last line
        """;

    public const string TrainHelp = """
        nabla train: train a built-in model.

        options:
          --model NAME        mlp, lenet, cnn or resnet (default cnn)
          --dataset NAME|DIR  fashion-mnist (default), mnist, or a folder with the four IDX files
          --epochs N          (default 5)
          --batch-size N      (default 64)
          --lr X              learning rate (default 0.001; 0.05 for sgd)
          --optimizer NAME    adam (default), adamw or sgd (momentum 0.9)
          --schedule NAME     constant (default) or cosine (per step, down to 0 at the end)
          --seed N            (default 0)
          --output-dir DIR    checkpoints, metrics.csv, TensorBoard events (default runs/<model>)
          --resume CKPT       continue from a checkpoint written by an earlier run
          --offline           never try to download the dataset
          --json              print the final metrics as one JSON object on the last line
        """;

    public const string EvalHelp = """
        nabla eval: evaluate a checkpoint on a dataset's test split.

        options:
          --checkpoint PATH   a checkpoint written by nabla train or quickstart (required)
          --model NAME        the architecture it was trained with (default cnn)
          --dataset NAME|DIR  as for train (default fashion-mnist)
          --batch-size N      (default 256)
          --offline           never try to download the dataset
          --json              print the metrics as one JSON object on the last line
        """;

    public const string InspectHelp = """
        nabla inspect FILE: list every tensor's name, dtype and shape, and the parameter count.
        FILE is a .safetensors file (weights or a Nabla checkpoint) or a PyTorch checkpoint (.pt, .pth, .bin),
        whose state dict is read without running any code from the file.
        """;

    static readonly HashSet<string> CommonFlags = ["--json", "--offline"];

    static bool Recycle => Environment.GetEnvironmentVariable("NABLA_RECYCLE") != "0";

    static Stream? Bundled(string file) => typeof(Commands).Assembly.GetManifestResourceStream("fashion-mnist/" + file);

    static (TensorDataset train, TensorDataset test) LoadData(string dataset, bool offline) =>
        (LoadSplit(dataset, offline, train: true), LoadSplit(dataset, offline, train: false));

    /// <summary>One split of a named dataset or of a folder with the four IDX files.</summary>
    static TensorDataset LoadSplit(string dataset, bool offline, bool train)
    {
        if (dataset == "fashion-mnist") return IdxDatasets.Load(IdxDatasetSpec.FashionMnist, train, download: !offline, bundled: Bundled);
        if (dataset == "mnist") return IdxDatasets.Load(IdxDatasetSpec.Mnist, train, download: !offline);
        if (Directory.Exists(dataset))
        {
            // A folder with the MNIST file names; hashes of a user's own files are not known, so none are checked.
            var spec = IdxDatasetSpec.FashionMnist with
            {
                Name = Path.GetFileName(Path.GetFullPath(dataset)), Mirrors = [],
                TrainImages = new(IdxDatasetSpec.FashionMnist.TrainImages.Name, ""), TrainLabels = new(IdxDatasetSpec.FashionMnist.TrainLabels.Name, ""),
                TestImages = new(IdxDatasetSpec.FashionMnist.TestImages.Name, ""), TestLabels = new(IdxDatasetSpec.FashionMnist.TestLabels.Name, ""),
            };
            return IdxDatasets.Load(spec, train, root: dataset, download: false);
        }
        throw new DataFormatException($"dataset '{dataset}' is neither fashion-mnist, mnist nor an existing folder");
    }

    /// <param name="cosineSteps">when positive, the rate follows a cosine from lr to 0 over that many optimizer steps</param>
    static Func<IEnumerable<Tensor>, OptimizerConfig> OptimizerFactory(string name, double lr, int cosineSteps = 0) => ps =>
    {
        Optimizer opt = name switch
        {
            "adam" => new Adam(ps, lr),
            "adamw" => new AdamW(ps, lr),
            "sgd" => new SGD(ps, lr, momentum: 0.9),
            _ => throw new UsageException($"unknown optimizer '{name}'; choose adam, adamw or sgd"),
        };
        return cosineSteps > 0
            ? new OptimizerConfig(opt, new CosineAnnealingLR(opt, cosineSteps), SchedulerInterval.Step)
            : new OptimizerConfig(opt);
    };

    public static int Quickstart(string[] argv)
    {
        var a = new Args(argv, CommonFlags, new HashSet<string> { "--epochs", "--batch-size", "--lr", "--seed", "--output-dir" });
        return RunTraining("cnn", "fashion-mnist", a.Int("--epochs", 3), a.Int("--batch-size", 64), a.Double("--lr", 1e-3), "adam",
            (ulong)a.Int("--seed", 0), a.Get("--output-dir", Path.Combine("runs", "quickstart")), null, a.Has("--json"), offline: true, cosine: true);
    }

    public static int Train(string[] argv)
    {
        var a = new Args(argv, CommonFlags, new HashSet<string> { "--model", "--dataset", "--epochs", "--batch-size", "--lr", "--optimizer", "--seed", "--output-dir", "--resume", "--schedule" });
        var schedule = a.Get("--schedule", "constant");
        if (schedule is not ("constant" or "cosine")) throw new UsageException($"--schedule must be constant or cosine, got '{schedule}'");
        var model = a.Get("--model", "cnn");
        var opt = a.Get("--optimizer", "adam");
        return RunTraining(model, a.Get("--dataset", "fashion-mnist"), a.Int("--epochs", 5), a.Int("--batch-size", 64), a.Double("--lr", opt == "sgd" ? 0.05 : 1e-3),
            opt, (ulong)a.Int("--seed", 0), a.Get("--output-dir", Path.Combine("runs", model)), a.Get("--resume"), a.Has("--json"), a.Has("--offline"), schedule == "cosine");
    }

    static int RunTraining(string modelName, string dataset, int epochs, int batchSize, double lr, string optimizer, ulong seed, string outDir,
        string? resume, bool json, bool offline, bool cosine = false)
    {
        if (epochs < 1) throw new UsageException($"--epochs must be at least 1, got {epochs}");
        if (batchSize < 1) throw new UsageException($"--batch-size must be at least 1, got {batchSize}");
        var clock = Stopwatch.StartNew();
        Tensor.ManualSeed(seed);
        var (train, test) = LoadData(dataset, offline);
        var net = BuiltinModels.Create(modelName);
        var trainLoader = DataLoader.Create(train, batchSize, shuffle: true, seed: seed + 1);
        var task = new ClassificationTask(net, OptimizerFactory(optimizer, lr, cosine ? epochs * trainLoader.Count : 0), modelName);
        Console.WriteLine($"model {modelName}: {net.NumParameters():N0} parameters; {train.Count:N0} training and {test.Count:N0} test images");
        // NOTE: evaluation batches have the training batch size, so the buffers recycled between steps (RecycleStepMemory)
        // fit evaluation too. With batches of 250 the cache filled with evaluation-sized arrays at each epoch end, evicting
        // and re-allocating training ones, and the 3-epoch quickstart peaked at 0.99-1.13 GiB instead of about 670 MiB.
        var testLoader = DataLoader.Create(test, batchSize);
        Directory.CreateDirectory(outDir);
        using var tb = new TensorBoardLogger(Path.Combine(outDir, "tensorboard"));
        var ckpt = new ModelCheckpoint(Path.Combine(outDir, "checkpoints"), monitor: "val_acc", mode: "max");
        var trainer = new Trainer(new TrainerOptions
        {
            MaxEpochs = epochs,
            Seed = null,
            Callbacks = [ckpt, new LearningRateMonitor()],
            Loggers = [new CsvLogger(outDir), tb],
            // NOTE: the built-in task keeps no step tensors, so each batch can hand its buffers to the next
            // (NABLA_RECYCLE=0 turns it off, to compare).
            RecycleStepMemory = Recycle,
        });
        trainer.Fit(task, trainLoader, testLoader, resume);
        var metrics = trainer.Test(task, testLoader);
        double seconds = clock.Elapsed.TotalSeconds;
        TrainingPlot.Write(Path.Combine(outDir, "curves.png"), trainer.History);
        Console.WriteLine($"test accuracy {metrics["val_acc"]:P2}, test loss {metrics["val_loss"]:0.0000}, {seconds:0.0}s; outputs in {outDir}");
        if (json) Console.WriteLine(JsonLine(metrics["val_acc"], metrics["val_loss"], trainer.CurrentEpoch, seconds));
        return 0;
    }

    static string JsonLine(double acc, double loss, int epochs, double seconds)
    {
        using var ms = new MemoryStream();
        using (var w = new Utf8JsonWriter(ms))
        {
            w.WriteStartObject();
            w.WriteNumber("test_accuracy", Math.Round(acc, 6));
            w.WriteNumber("test_loss", Math.Round(loss, 6));
            w.WriteNumber("epochs", epochs);
            w.WriteNumber("seconds", Math.Round(seconds, 2));
            w.WriteEndObject();
        }
        return System.Text.Encoding.UTF8.GetString(ms.ToArray());
    }

    public static int Eval(string[] argv)
    {
        var a = new Args(argv, CommonFlags, new HashSet<string> { "--checkpoint", "--model", "--dataset", "--batch-size" });
        var path = a.Get("--checkpoint") ?? throw new UsageException("--checkpoint is required");
        var clock = Stopwatch.StartNew();
        var (weights, _, state) = Checkpoint.Load(path);
        var modelName = a.Get("--model", "cnn");
        var net = BuiltinModels.Create(modelName);
        // Checkpoints written by nabla train record the model name; older ones (and the Trainer's default) the class name.
        if (state.Architecture.Length > 0 && state.Architecture != modelName && state.Architecture != net.GetType().Name)
            throw new ModelFormatException($"checkpoint: {path} was written for architecture '{state.Architecture}', but --model is '{modelName}'");
        var task = new ClassificationTask(net, ps => new OptimizerConfig(new SGD(ps)), modelName);
        task.LoadStateDict(weights);
        // NOTE: only the test split is read; loading the training set here would cost seconds for nothing.
        var test = LoadSplit(a.Get("--dataset", "fashion-mnist"), a.Has("--offline"), train: false);
        var metrics = new Trainer(new TrainerOptions { EnableProgressBar = false, RecycleStepMemory = Recycle }).Test(task, DataLoader.Create(test, a.Int("--batch-size", 256)));
        double seconds = clock.Elapsed.TotalSeconds;
        Console.WriteLine($"test accuracy {metrics["val_acc"]:P2}, test loss {metrics["val_loss"]:0.0000} ({test.Count:N0} images, {seconds:0.0}s)");
        if (a.Has("--json")) Console.WriteLine(JsonLine(metrics["val_acc"], metrics["val_loss"], state.Epoch, seconds));
        return 0;
    }

    public static int Inspect(string[] argv)
    {
        var a = new Args(argv, CommonFlags, new HashSet<string>());
        if (a.Positionals.Count != 1) throw new UsageException("expects exactly one FILE");
        var path = a.Positionals[0];
        if (!File.Exists(path)) throw new ModelFormatException($"inspect: file not found: {path}");
        if (InteropCommands.IsPyTorch(path)) return InteropCommands.InspectPyTorch(path);
        if (OnnxCommands.IsOnnx(path)) return OnnxCommands.Inspect(path);
        if (Nabla.Graph.GraphFile.IsGraphFile(path)) return GraphFileCommands.Inspect(path);
        var (tensors, meta) = SafeTensors.LoadWithMetadata(path);
        long total = 0;
        int nameWidth = Math.Max(4, tensors.Keys.Select(k => k.Length).DefaultIfEmpty(0).Max());
        Console.WriteLine($"{"name".PadRight(nameWidth)}  {"dtype",-8}  shape");
        foreach (var (k, t) in tensors.OrderBy(kv => kv.Key, StringComparer.Ordinal))
        {
            Console.WriteLine($"{k.PadRight(nameWidth)}  {SafeTensors.DTypeName(t.DType),-8}  [{string.Join(", ", t.Shape)}]");
            if (!k.StartsWith("optimizer.", StringComparison.Ordinal)) total += t.NumElements;
        }
        Console.WriteLine($"{tensors.Count} tensors, {total:N0} parameters and buffers (optimizer state not counted)");
        foreach (var (k, v) in meta) Console.WriteLine($"metadata {k}: {(v.Length > 120 ? v[..120] + "..." : v)}");
        return 0;
    }
}

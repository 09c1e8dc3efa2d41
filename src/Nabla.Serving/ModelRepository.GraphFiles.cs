namespace Nabla.Serving;

public sealed partial class ModelRepository
{
    /// <summary>The saved Nabla graph a version folder may hold instead of model.onnx (with model.safetensors beside it).</summary>
    public const string NablaGraphFilename = "model.nabla.json";

    /// <summary>
    /// The model file of one version folder: the configured <c>default_model_filename</c>; when that is the default
    /// <c>model.onnx</c> and the folder has none, a saved Nabla graph <c>model.nabla.json</c> if present. Either kind is
    /// loaded by <c>OnnxModel.Load</c>, which tells them apart by the name.
    /// </summary>
    internal static string ModelFileIn(string versionDir, ModelConfig declared)
    {
        var file = Path.Combine(versionDir, declared.DefaultModelFilename);
        if (declared.DefaultModelFilename == "model.onnx" && !File.Exists(file))
        {
            var graph = Path.Combine(versionDir, NablaGraphFilename);
            if (File.Exists(graph)) return graph;
        }
        return file;
    }
}

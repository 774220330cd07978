/*
 * Stand-ins for the nine symbols the TensorRT Python bindings need from libnvinfer, libnvonnxparser
 * and libnvinfer_plugin to be imported. Built under each soname TensorRT 10/11 uses, they let
 * `import tensorrt` load the real classes, methods and enums on a machine without TensorRT or a GPU.
 * Every factory returns NULL, so nothing can be built or run: tests double the GPU-bound classes.
 */
#include <stddef.h>

void *createInferBuilder_INTERNAL(void *logger, int version) { return NULL; }
void *createInferRefitter_INTERNAL(void *engine, void *logger, int version) { return NULL; }
void *createInferRuntime_INTERNAL(void *logger, int version) { return NULL; }
void *createNvOnnxParser_INTERNAL(void *network, void *logger, int version) { return NULL; }
void *createNvOnnxParserRefitter_INTERNAL(void *refitter, void *logger, int version) { return NULL; }
void *getBuilderPluginRegistry(int capability) { return NULL; }
int getNvOnnxParserVersion(void) { return 0; }
void *getPluginRegistry(void) { return NULL; }
int initLibNvInferPlugins(void *logger, const char *name_space) { return 0; }

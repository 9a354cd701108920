# Hardening builds (issue #8). Both are off in the normal build.
#
# DISTILLERY_SANITIZE: a -fsanitize= list, e.g. "address,undefined"; the whole
# project (libraries, binaries, tests) is instrumented and any undefined
# behaviour aborts the process (-fno-sanitize-recover), so it fails its test.
# scripts/sanitize_test.sh builds build-asan with it and runs the test suite.
#
# DISTILLERY_FUZZ: builds the libFuzzer targets in fuzz/ (needs clang); the
# project's code is instrumented for coverage plus address and undefined
# behaviour sanitizers. scripts/fuzz.sh builds build-fuzz with it and runs
# each target for a while on a copy of its seed corpus.
set(DISTILLERY_SANITIZE "" CACHE STRING
    "Sanitizers for the whole build, e.g. address,undefined (empty: none)")
option(DISTILLERY_FUZZ "Build the libFuzzer targets in fuzz/ (clang only)" OFF)

if(DISTILLERY_FUZZ)
  if(NOT CMAKE_CXX_COMPILER_ID STREQUAL "Clang")
    message(FATAL_ERROR "DISTILLERY_FUZZ needs clang (libFuzzer): configure with "
                        "-DCMAKE_CXX_COMPILER=clang++-14, as scripts/fuzz.sh does")
  endif()
  if(NOT DISTILLERY_SANITIZE)
    set(DISTILLERY_SANITIZE "address,undefined")
  endif()
  # Coverage instrumentation for everything; fuzz/ links the fuzzer's main
  # (-fsanitize=fuzzer) into each target.
  add_compile_options(-fsanitize=fuzzer-no-link)
  # Instrumentation stops clang from vectorizing the `omp simd` loops in
  # common/; it warns about each one, which says nothing about our code.
  add_compile_options(-Wno-pass-failed)
endif()

if(DISTILLERY_SANITIZE)
  message(STATUS "Sanitizers: ${DISTILLERY_SANITIZE}")
  add_compile_options(-fsanitize=${DISTILLERY_SANITIZE} -fno-sanitize-recover=all
                      -fno-omit-frame-pointer)
  add_link_options(-fsanitize=${DISTILLERY_SANITIZE})
endif()

# FindFlexMLRT: the FlexMLRT SDK (AMD Ryzen AI) for flexmlrt_bridge.
#
# Looks under FLEXMLRT_ROOT (CMake variable, else environment variable), in
# the layouts seen in Ryzen AI installs:
#   <root>/include/FlexMLClient.h                                 <root>/lib/libflexmlrt.so
#   <root>/lib/python3.*/site-packages/flexmlrt/include/...       <root>/deployment/...
# Defines FlexMLRT_FOUND, FlexMLRT_INCLUDE_DIR, FlexMLRT_LIBRARY,
# FlexMLRT_ROOT_DIR and the imported target FlexMLRT::FlexMLRT.
if(NOT FLEXMLRT_ROOT AND DEFINED ENV{FLEXMLRT_ROOT})
  set(FLEXMLRT_ROOT "$ENV{FLEXMLRT_ROOT}")
endif()

set(_fx_hints)
if(FLEXMLRT_ROOT)
  file(GLOB _fx_site "${FLEXMLRT_ROOT}/lib/python3*/site-packages/flexmlrt")
  list(APPEND _fx_hints "${FLEXMLRT_ROOT}" ${_fx_site})
endif()

find_path(FlexMLRT_INCLUDE_DIR FlexMLClient.h
  HINTS ${_fx_hints} PATH_SUFFIXES include)
find_library(FlexMLRT_LIBRARY NAMES flexmlrt
  HINTS ${_fx_hints} PATH_SUFFIXES lib lib64 deployment lib/deployment)

include(FindPackageHandleStandardArgs)
find_package_handle_standard_args(FlexMLRT
  REQUIRED_VARS FlexMLRT_INCLUDE_DIR FlexMLRT_LIBRARY)

if(FlexMLRT_FOUND)
  set(FlexMLRT_ROOT_DIR "${FLEXMLRT_ROOT}")
  if(NOT TARGET FlexMLRT::FlexMLRT)
    add_library(FlexMLRT::FlexMLRT UNKNOWN IMPORTED)
    set_target_properties(FlexMLRT::FlexMLRT PROPERTIES
      IMPORTED_LOCATION "${FlexMLRT_LIBRARY}"
      INTERFACE_INCLUDE_DIRECTORIES "${FlexMLRT_INCLUDE_DIR}")
  endif()
endif()
mark_as_advanced(FlexMLRT_INCLUDE_DIR FlexMLRT_LIBRARY)

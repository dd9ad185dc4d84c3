# Writes the instate command: bin/instate with its first line naming the
# Lua it was built for and, for an install, the directories of the module
# searched after LUA_PATH / LUA_CPATH and the Lua's defaults.
#   instate_write_bin(SRC DEST LUA_PROGRAM LPATH CPATH): LPATH/CPATH empty
#   for the build tree's copy (the specs set the paths themselves).
# Included by CMakeLists.txt at configure time and by the install step.
function(instate_write_bin src dest lua_program lpath cpath)
  file(READ "${src}" text)
  string(REGEX REPLACE "^#![^\n]*" "#!${lua_program}" text "${text}")
  if(lpath)
    string(REPLACE "local INSTALL_LPATH, INSTALL_CPATH = nil, nil"
      "local INSTALL_LPATH, INSTALL_CPATH = \"${lpath}\", \"${cpath}\"" text "${text}")
  endif()
  get_filename_component(dir "${dest}" DIRECTORY)
  get_filename_component(name "${dest}" NAME)
  set(tmp "${CMAKE_CURRENT_BINARY_DIR}/instate-bin.tmp")
  file(MAKE_DIRECTORY "${tmp}")
  file(WRITE "${tmp}/${name}" "${text}")
  file(COPY "${tmp}/${name}" DESTINATION "${dir}" FILE_PERMISSIONS
    OWNER_READ OWNER_WRITE OWNER_EXECUTE GROUP_READ GROUP_EXECUTE WORLD_READ WORLD_EXECUTE)
  file(REMOVE_RECURSE "${tmp}")
endfunction()

# The install step: CMAKE_INSTALL_PREFIX is the prefix installed to.
if(INSTATE_BIN_INSTALL)
  foreach(v LMOD CMOD)
    if(IS_ABSOLUTE "${INSTATE_BIN_${v}}")
      set(${v} "${INSTATE_BIN_${v}}")
    else()
      set(${v} "${CMAKE_INSTALL_PREFIX}/${INSTATE_BIN_${v}}")
    endif()
  endforeach()
  set(dest "$ENV{DESTDIR}${CMAKE_INSTALL_PREFIX}/bin/instate")
  message(STATUS "Installing: ${dest}")
  instate_write_bin("${INSTATE_BIN_SRC}" "${dest}" "${INSTATE_BIN_LUA}"
    "${LMOD}/?.lua;${LMOD}/?/init.lua" "${CMOD}/?.so")
endif()
